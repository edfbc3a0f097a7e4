"""Stage 04: pretrain or fine-tune an AWD-LSTM (ULMFiT) or AWD-QRNN (MultiFiT) language model.

The recipe is the predecessor's, which follows fastai's and MultiFiT's: ``CrossEntropyLossFlat``,
``Adam(wd=0.1, eps=1e-7)``, ``GradientClip(0.1)``, ``rnn_cbs(alpha=2, beta=1)`` (AR/TAR),
``fit_one_cycle(epochs, lr, moms=(0.8, 0.7, 0.8), div=10)``, metrics accuracy and perplexity,
mixed precision on CUDA only. Fine-tuning (``pretrained_model``) trains the embedding and the
tied decoder alone for one epoch at ``pretrain_lr`` (``freeze_to(-1)``, ``div=50``), then
everything for ``num_epochs - 1`` epochs at ``finetune_lr`` (``div=25``).

Robustness:

* a checkpoint (model, optimizer, epoch, RNG states, history) is written atomically after every
  epoch to ``SAVE_PATH/EXP.ckpt/last.pth``; ``resume=True`` continues from it with
  ``fit_one_cycle(start_epoch=k)``, which keeps the one-cycle schedule's position. On CPU the
  final weights equal those of an uninterrupted run bit for bit: the data order is a function
  of ``(seed, epoch)`` and the RNG states are restored where they were saved. (On CUDA, cuDNN's
  LSTM kernels are not bit-reproducible, so the two runs only agree closely.)
* a NaN/inf loss stops training (:class:`TrainingDiverged`); the last good checkpoint stays.
* outputs are written atomically: ``EXP.json`` (:class:`LMConfig`), ``EXP.history.csv`` and,
  last, ``EXP.pth``: fastai's ``Learner.save`` layout ``{'model', 'opt'}``, with the optimizer
  state in plain lists, dicts, tensors and Python numbers (:func:`plain_state`) and every tensor
  on the CPU, so that a plain ``torch.load(path)`` opens it anywhere and ``Learner.load`` (with
  the optimizer) reads it too. The checkpoint's optimizer state has the same plain form.

Distributed data parallelism: run the CLI under ``torchrun --nproc_per_node N``. Each process
reads its own ``batch_size`` streams of one global layout of ``N * batch_size`` streams (see
:class:`LMStreamBatches`), the model is wrapped in torch's ``DistributedDataParallel`` for each
``fit`` (fastai 2.8's own ``DistributedTrainer`` needs the ``accelerate`` package, which this
environment does not pin), and fastai's metrics average over the processes.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import fastai.callback.schedule  # noqa: F401 - patches Learner.fit_one_cycle and lr_find
import numpy as np
import torch
import torch.distributed as torch_dist
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.progress import ProgressCallback
from fastai.callback.rnn import RNNRegularizer, rnn_cbs
from fastai.callback.training import GradientClip
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import Perplexity, accuracy
from fastai.optimizer import Adam
from fastai.torch_core import get_model
from fastcore.basics import noop
from fastcore.foundation import L
from torch.nn.parallel import DistributedDataParallel

from pretraining_utils.awd_qrnn import build_language_model, language_model_split
from pretraining_utils.checkpoint_io import load_pth, plain_state, save_pth
from pretraining_utils.corpus import BinaryCorpus
from pretraining_utils.lm_data import HoldOut, LMStreamBatches, open_token_corpus
from ulmfit_core.artifacts import atomic_file, library_versions
from ulmfit_core.errors import InputError
from ulmfit_core.ids import SPECIAL_IDS
from ulmfit_core.lm_config import ARCHS, DROPOUT_NAMES, LMConfig, sidecar_path

logger = logging.getLogger(__name__)

__all__ = [
    "LMStreamDataLoader",
    "LRFindSummary",
    "NonFiniteLossGuard",
    "Phase",
    "TrainConfig",
    "TrainSummary",
    "TrainingDiverged",
    "checkpoint_dir",
    "find_learning_rate",
    "infer_lm_config",
    "output_paths",
    "plan_phases",
    "train_language_model",
]

MOMS = (0.8, 0.7, 0.8)
PRECISIONS = ("fp32", "fp16", "bf16")
HISTORY_COLUMNS = ("epoch", "phase", "train_loss", "valid_loss", "accuracy", "perplexity", "time")
CHECKPOINT_FILE = "last.pth"
# Run settings that may differ when resuming: where and how fast it runs, not what it computes.
_RESUMABLE_CHANGES = frozenset(
    {"resume", "progress", "device", "precision", "pretrain_lr", "finetune_lr"}
)


class TrainingDiverged(InputError):
    """The loss became NaN or infinite: the learning rate is too high for this model/data."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """One stage-04 run.

    Args:
        train_path: stage 03's binary corpus directory, or a text id file.
        save_path: output directory; ``exp_name`` names the files in it.
        valid_path: a validation corpus (same formats); ``None`` holds out ``valid_fraction``
            of the training lines (a deterministic pseudo-random subset, :class:`HoldOut`).
        vocab_size: required for text ids; for a binary corpus it must equal its meta's.
        arch, emb_size, hidden_size, n_layers: ``None`` takes the recipe's defaults, or the
            pretrained model's when fine-tuning (given values must then match it).
        input_p ... output_p, drop_mult: dropouts (``None``: the arch's default), all scaled
            by ``drop_mult``.
        batch_size: parallel streams per process; bptt: tokens per window.
        min_seq_len: drop lines with fewer tokens (BOS/EOS included).
        num_epochs: epochs in all (fine-tuning: 1 frozen + ``num_epochs - 1`` unfrozen).
        pretrain_lr: peak LR of pretraining, and of the frozen fine-tuning epoch.
        finetune_lr: peak LR of the unfrozen fine-tuning epochs.
        pretrained_model: a ``.pth`` to fine-tune (with its ``.json`` sidecar when there is one).
        precision: ``fp32``, or ``fp16``/``bf16`` mixed precision (CUDA only; ignored on CPU).
        device: ``None`` or ``"auto"``: CUDA when available; else e.g. ``"cpu"``, ``"cuda:1"``.
        seed: model initialisation, dropout masks and the per-epoch line order.
        resume: continue from ``SAVE_PATH/EXP.ckpt`` when there is a checkpoint.
        progress: show fastai's progress bars (the CLI enables them on a terminal).
    """

    train_path: Path
    save_path: Path
    exp_name: str
    valid_path: Path | None = None
    valid_fraction: float = 0.05
    vocab_size: int | None = None
    arch: str | None = None
    emb_size: int | None = None
    hidden_size: int | None = None
    n_layers: int | None = None
    input_p: float | None = None
    weight_p: float | None = None
    embed_p: float | None = None
    hidden_p: float | None = None
    output_p: float | None = None
    drop_mult: float = 1.0
    batch_size: int = 64
    bptt: int = 70
    min_seq_len: int = 0
    num_epochs: int = 1
    pretrain_lr: float = 5e-3
    finetune_lr: float = 1e-3
    pretrained_model: Path | None = None
    precision: str = "fp32"
    device: str | None = None
    seed: int = 42
    resume: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.arch is not None and self.arch not in ARCHS:
            raise InputError(f"unknown architecture {self.arch!r}: use one of {', '.join(ARCHS)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}: use one of {PRECISIONS}")
        if self.num_epochs < 1:
            raise InputError(f"num_epochs must be at least 1, got {self.num_epochs}")
        if self.valid_path is None and not 0.0 < self.valid_fraction < 0.5:
            raise InputError(f"valid_fraction must be in (0, 0.5), got {self.valid_fraction}")
        if not self.exp_name or "/" in self.exp_name:
            raise InputError(f"exp_name must be a plain file name, got {self.exp_name!r}")
        for name in ("pretrain_lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def dropouts(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in DROPOUT_NAMES}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as absolute strings (so that ``a/b`` and ``./a/b`` compare equal)."""
        return {
            k: (str(Path(v).resolve()) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class Phase:
    """One ``fit_one_cycle`` call of the plan."""

    name: str
    epochs: int
    lr: float
    frozen: bool
    div: float
    pct_start: float = 0.25


def plan_phases(cfg: TrainConfig) -> list[Phase]:
    """Pretraining: one phase. Fine-tuning: 1 frozen epoch, then ``num_epochs - 1`` unfrozen."""
    if cfg.pretrained_model is None:
        return [Phase("pretrain", cfg.num_epochs, cfg.pretrain_lr, frozen=False, div=10.0)]
    phases = [Phase("frozen", 1, cfg.pretrain_lr, frozen=True, div=50.0)]
    if cfg.num_epochs > 1:
        phases.append(
            Phase("unfrozen", cfg.num_epochs - 1, cfg.finetune_lr, frozen=False, div=25.0)
        )
    return phases


@dataclass(frozen=True)
class OutputPaths:
    model: Path
    config: Path
    history: Path
    lr_find_plot: Path
    checkpoint_dir: Path


def output_paths(save_path: str | os.PathLike, exp_name: str) -> OutputPaths:
    """Where a run named ``exp_name`` writes its files."""
    base = Path(save_path)
    return OutputPaths(
        model=base / f"{exp_name}.pth",
        config=base / f"{exp_name}.json",
        history=base / f"{exp_name}.history.csv",
        lr_find_plot=base / f"{exp_name}.lr_find.png",
        checkpoint_dir=base / f"{exp_name}.ckpt",
    )


def checkpoint_dir(save_path: str | os.PathLike, exp_name: str) -> Path:
    return output_paths(save_path, exp_name).checkpoint_dir


@dataclass(frozen=True)
class TrainSummary:
    lm_config: LMConfig
    history: list[dict[str, Any]]
    paths: OutputPaths
    seconds: float
    resumed_after_epoch: int | None

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


@dataclass(frozen=True)
class LRFindSummary:
    suggested_lr: float
    plot_path: Path
    seconds: float


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


class LMStreamDataLoader(DataLoader):
    """A fastai ``DataLoader`` over :class:`LMStreamBatches`, for ``Learner``.

    Each batch is gathered from the memory map when it is needed (no worker processes: a batch
    costs about a millisecond). ``len()`` is the number of batches, ``n`` is
    ``n_batches * bs`` as in fastai's ``LMDataLoader``. The line order is fixed with
    :meth:`set_epoch`; :class:`_EpochBookkeeping` calls it before each training epoch so that
    the order depends only on ``(seed, epoch)``, whatever else iterated the loader.
    """

    def __init__(self, batches: LMStreamBatches, device: torch.device | str | None = None):
        self.batches = batches
        super().__init__(
            dataset=batches,
            bs=batches.bs,
            shuffle=False,
            indexed=False,
            n=len(batches) * batches.bs,
            device=device,
            pin_memory=torch.device(device or "cpu").type == "cuda",
        )
        self.n_inp = 1

    def get_idxs(self) -> range:
        return range(self.n)  # unused by create_batches; a range costs no memory

    def create_batches(self, samps):  # noqa: ARG002 - fastai's signature; batches are computed
        for j in range(len(self.batches)):
            x, y = self.batches.batch(j)
            yield torch.from_numpy(x), torch.from_numpy(y)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def new(self, *args, **kwargs):
        raise NotImplementedError(
            "LMStreamDataLoader cannot be copied with new(); build another from LMStreamBatches"
        )


@dataclass
class _Corpora:
    train: BinaryCorpus
    valid: BinaryCorpus | None
    vocab_size: int
    spm_model_sha256: str | None


def _open_corpora(cfg: TrainConfig, convert_dir: Path) -> _Corpora:
    train = open_token_corpus(cfg.train_path, cfg.vocab_size, convert_dir / "train")
    valid = None
    if cfg.valid_path is not None:
        valid = open_token_corpus(cfg.valid_path, cfg.vocab_size, convert_dir / "valid")
    for name, corpus in (("training", train), ("validation", valid)):
        if corpus is None:
            continue
        if cfg.vocab_size is not None and corpus.vocab_size != cfg.vocab_size:
            raise InputError(
                f"--vocab-size {cfg.vocab_size} does not match the {name} corpus's vocabulary "
                f"of {corpus.vocab_size} ({corpus.path / 'meta.json'}); drop the flag or fix it"
            )
        special = corpus.meta.get("special_ids")
        if special is not None and special != SPECIAL_IDS:
            raise InputError(
                f"the {name} corpus uses special ids {special}, but the models need fastai's "
                f"{SPECIAL_IDS}; rebuild the SentencePiece model with stage 02"
            )
    sha = train.meta.get("spm_model_sha256")
    if valid is not None:
        if valid.vocab_size != train.vocab_size:
            raise InputError(
                f"the training corpus has a vocabulary of {train.vocab_size} pieces but the "
                f"validation corpus has {valid.vocab_size}; encode both with the same SPM model"
            )
        valid_sha = valid.meta.get("spm_model_sha256")
        if sha and valid_sha and sha != valid_sha:
            raise InputError(
                f"the training corpus was encoded with SPM model sha256 {sha} but the validation "
                f"corpus with {valid_sha}; encode both with the same model"
            )
        sha = sha or valid_sha
        if train.meta.get("reverse", False) != valid.meta.get("reverse", False):
            raise InputError(
                "one corpus was encoded reversed (--spm-extra-options reverse) and the other not; "
                "a backward language model needs both reversed"
            )
    return _Corpora(train, valid, train.vocab_size, sha)


def _make_loaders(
    cfg: TrainConfig, corpora: _Corpora, rank: int, world_size: int, device: torch.device
) -> DataLoaders:
    common = dict(
        bs=cfg.batch_size, bptt=cfg.bptt, min_len=cfg.min_seq_len, rank=rank, world_size=world_size
    )
    train_c, valid_c = corpora.train, corpora.valid
    split = None if valid_c is not None else HoldOut(cfg.valid_fraction, held_out=False)
    try:
        train = LMStreamBatches(
            train_c.tokens, train_c.offsets, shuffle=True, seed=cfg.seed, holdout=split, **common
        )
    except InputError as err:
        raise InputError(f"training data: {err}") from None
    source = valid_c if valid_c is not None else train_c
    holdout = None if valid_c is not None else HoldOut(cfg.valid_fraction, held_out=True)
    try:
        valid = LMStreamBatches(
            source.tokens, source.offsets, shuffle=False, holdout=holdout, **common
        )
    except InputError as err:
        hint = (
            "" if valid_c is not None else " (raise --valid-fraction or pass --pretokenized-valid)"
        )
        raise InputError(f"validation data: {err}{hint}") from None
    if rank == 0:
        for name, b in (("train", train), ("valid", valid)):
            dropped = (
                f" ({b.dropped_lines} shorter than {cfg.min_seq_len} tokens dropped)"
                if cfg.min_seq_len > 0
                else ""
            )
            logger.info(
                "%s: %d lines%s, %d tokens -> %d batches of %d x %d per process%s",
                name,
                b.num_lines,
                dropped,
                b.num_tokens,
                len(b),
                b.bs,
                b.bptt,
                f" ({world_size} processes)" if world_size > 1 else "",
            )
    return DataLoaders(
        LMStreamDataLoader(train, device), LMStreamDataLoader(valid, device), device=device
    )


# ---------------------------------------------------------------------------------------------
# Model config and weights
# ---------------------------------------------------------------------------------------------


def infer_lm_config(state_dict: dict[str, torch.Tensor], source: str) -> LMConfig:
    """Rebuild the sizes of a fastai AWD-LSTM/QRNN language model from its state dict alone.

    For ``.pth`` files without our ``.json`` sidecar (e.g. trained by the predecessor with
    fastai 2.2.7); dropouts get the arch's defaults.
    """
    try:
        vocab_size, emb_size = state_dict["0.encoder.weight"].shape
        layers = sorted({int(k.split(".")[2]) for k in state_dict if k.startswith("0.rnns.")})
        if "0.rnns.0.weight_hh_l0_raw" in state_dict:
            arch = "awd-lstm"
            hidden = state_dict["0.rnns.0.weight_hh_l0_raw"].shape[1]
        else:
            arch = "qrnn"
            hidden = state_dict["0.rnns.0.layers.0.linear.weight_raw"].shape[0] // 3
    except (KeyError, IndexError, ValueError):
        raise InputError(
            f"{source}: not a fastai AWD-LSTM/AWD-QRNN language model (unexpected state-dict keys)"
        ) from None
    if len(layers) == 1:
        hidden = emb_size
    return LMConfig.create(
        arch, int(vocab_size), emb_size=int(emb_size), hidden_size=int(hidden), n_layers=len(layers)
    )


def _pretrained(cfg: TrainConfig) -> tuple[LMConfig, dict[str, torch.Tensor]]:
    path = cfg.pretrained_model
    weights = load_pth(path)["model"]
    side = sidecar_path(path)
    if side.is_file():
        pre = LMConfig.load(side)
    else:
        logger.warning("%s not found: reading the architecture from the weights", side)
        pre = infer_lm_config(weights, str(path))
    return pre, weights


def _model_config(cfg: TrainConfig, corpora: _Corpora, pretrained: LMConfig | None) -> LMConfig:
    versions = library_versions("torch", "fastai", "fastcore")
    dropouts = cfg.dropouts
    if pretrained is None:
        return LMConfig.create(
            cfg.arch or "awd-lstm",
            corpora.vocab_size,
            emb_size=cfg.emb_size,
            hidden_size=cfg.hidden_size,
            n_layers=cfg.n_layers,
            drop_mult=cfg.drop_mult,
            dropouts=dropouts,
            spm_model_sha256=corpora.spm_model_sha256,
            versions=versions,
        )
    source = cfg.pretrained_model
    if pretrained.vocab_size != corpora.vocab_size:
        raise InputError(
            f"the pretrained model {source} has a vocabulary of {pretrained.vocab_size} pieces, "
            f"but the training corpus has {corpora.vocab_size}; fine-tuning needs the corpus "
            "encoded with the pretrained model's SentencePiece model"
        )
    pre_sha, sha = pretrained.spm_model_sha256, corpora.spm_model_sha256
    if pre_sha and sha and pre_sha != sha:
        raise InputError(
            f"the pretrained model {source} was trained with SPM model sha256 {pre_sha}, but the "
            f"corpus was encoded with {sha}; encode it with the pretrained model's SPM model"
        )
    asked = {
        "arch": cfg.arch,
        "emb_size": cfg.emb_size,
        "hidden_size": cfg.hidden_size,
        "n_layers": cfg.n_layers,
    }
    clashes = [
        f"{name}={value} (the model has {getattr(pretrained, name)})"
        for name, value in asked.items()
        if value is not None and value != getattr(pretrained, name)
    ]
    if clashes:
        raise InputError(
            f"the pretrained model {source} does not match the requested architecture: "
            f"{', '.join(clashes)}; leave these flags out when fine-tuning"
        )
    return LMConfig.create(
        pretrained.arch,
        pretrained.vocab_size,
        emb_size=pretrained.emb_size,
        hidden_size=pretrained.hidden_size,
        n_layers=pretrained.n_layers,
        drop_mult=cfg.drop_mult,
        dropouts=dropouts,
        spm_model_sha256=pre_sha or sha,
        versions=versions,
    )


def _load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(
        set(weights) - set(expected) - {k for k in weights if k.endswith(".module.weight")}
    )
    shapes = [
        f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise InputError(
            f"{source} does not fit the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches {shapes[:5]}"
        )
    model.load_state_dict(weights, strict=False)  # strict=False: fastai v1's dropped copies


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------


class NonFiniteLossGuard(Callback):
    """Stop training at the first NaN/inf loss (training or validation), with a clear message.

    It raises ``CancelFitException`` before the backward pass, so no NaN reaches the weights and
    the epoch's checkpoint is not written. In distributed training the decision is all-reduced,
    so every process stops at the same batch instead of waiting on the others.
    """

    order = RNNRegularizer.order + 1  # after AR/TAR were added to the loss

    def __init__(self, world_size: int = 1) -> None:
        self.world_size = world_size
        self.tripped: dict[str, Any] | None = None

    def before_fit(self) -> None:
        self.tripped = None

    def after_loss(self) -> None:
        loss = self.learn.loss_grad if self.training else self.learn.loss
        bad = (~torch.isfinite(loss.detach())).any().to(torch.int32)
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.all_reduce(bad, op=torch_dist.ReduceOp.MAX)
        if bad.item():
            self.tripped = {
                "epoch": self.epoch,
                "batch": self.iter + 1,
                "stage": "training" if self.training else "validation",
                "loss": float(loss.detach().float().reshape(-1)[0]),
            }
            raise CancelFitException()


class _ResettableDDP(DistributedDataParallel):
    """DDP with the ``reset()`` that fastai's ``ModelResetter`` calls (``fastai.distributed``
    patches it in too, but that module cannot be imported without ``accelerate``)."""

    def reset(self) -> None:
        self.module.reset()


class _DistributedDataParallel(Callback):
    """Wrap the model in torch's ``DistributedDataParallel`` for each fit (fastai's pattern)."""

    # After TrainEvalCallback put the model on its device; fastai's DistributedTrainer uses 11 too.
    order = 11

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def before_fit(self) -> None:
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.learn.model = _ResettableDDP(self.learn.model, device_ids=ids)

    def after_fit(self) -> None:
        if isinstance(self.learn.model, DistributedDataParallel):
            self.learn.model = self.learn.model.module


def _rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain values (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gaussian": cached,
        },
        "python": [py_version, list(py_state), py_gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))


class _EpochBookkeeping(Callback):
    """Per epoch of one phase: line order, history row, log line, checkpoint; resume restore."""

    order = 90  # after Recorder (50), ParamScheduler (60) and SkipToEpoch (70)

    def __init__(self, run: _Run, phase_index: int, start_epoch: int, restore: dict | None) -> None:
        self.run, self.phase_index = run, phase_index
        self.phase = run.phases[phase_index]
        self.offset = sum(p.epochs for p in run.phases[:phase_index])
        self.start_epoch, self.restore = start_epoch, restore
        self._started = 0.0

    def before_epoch(self) -> None:
        if self.restore is not None and self.epoch == self.start_epoch:
            self._restore(self.restore)
            self.restore = None
        self._started = time.perf_counter()

    def _restore(self, state: dict[str, Any]) -> None:
        rng = state["rng"]
        if len(rng) == self.run.world_size:
            _set_rng_state(rng[self.run.rank])
        else:
            logger.warning(
                "the checkpoint was written by %d processes, this run has %d: RNG states are not "
                "restored, so the result will differ from an uninterrupted run",
                len(rng),
                self.run.world_size,
            )
        if self.start_epoch == 0:
            return  # a phase starts afresh: each fit resets the smoothed loss and the loss scaler
        smooth = self.learn.recorder.smooth_loss
        smooth.val, smooth.count = state["smooth_loss"]["val"], state["smooth_loss"]["count"]
        scaler = getattr(self.learn, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])

    def before_train(self) -> None:
        self.dls.train.set_epoch(self.offset + self.epoch)

    def after_epoch(self) -> None:
        if self.epoch < self.start_epoch:  # skipped by SkipToEpoch when resuming
            return
        recorder = self.learn.recorder
        values = dict(zip(recorder.metric_names[1:-1], recorder.values[-1], strict=False))
        done = self.offset + self.epoch + 1
        row = {
            "epoch": done,
            "phase": self.phase.name,
            **{k: _as_float(values.get(k)) for k in HISTORY_COLUMNS[2:-1]},
            "time": round(time.perf_counter() - self._started, 3),
        }
        self.run.history.append(row)
        if self.run.rank == 0:
            logger.info(
                "epoch %d/%d (%s): train_loss %.4f valid_loss %.4f accuracy %.4f "
                "perplexity %.2f (%.1f s)",
                done,
                self.run.total_epochs,
                self.phase.name,
                row["train_loss"],
                row["valid_loss"],
                row["accuracy"],
                row["perplexity"],
                row["time"],
            )
        self.run.save_checkpoint(self.learn, self.phase_index, self.epoch + 1)


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value.item() if isinstance(value, torch.Tensor) else value)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class _Distributed:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    def barrier(self) -> None:
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.barrier()

    def close(self) -> None:
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def _resolve_device(requested: str | None, local_rank: int) -> torch.device:
    if requested in (None, "", "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise InputError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {requested!r} requested, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _setup_distributed(requested_device: str | None) -> _Distributed:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = _resolve_device(requested_device, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size <= 1:
        return _Distributed(0, 1, device)
    owns = False
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    logger.info("process %d of %d on %s", rank, world_size, device)
    return _Distributed(rank, world_size, device, owns)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Run:
    """Everything one training run holds: config, data, model, learner, history."""

    def __init__(
        self,
        cfg: TrainConfig,
        dist: _Distributed,
        convert_dir: Path,
        callbacks: Sequence[Callback] = (),
        for_lr_find: bool = False,
    ) -> None:
        self.cfg, self.dist = cfg, dist
        self.rank, self.world_size = dist.rank, dist.world_size
        self.paths = output_paths(cfg.save_path, cfg.exp_name)
        self.phases = plan_phases(cfg)
        self.total_epochs = sum(p.epochs for p in self.phases)
        self.history: list[dict[str, Any]] = []

        corpora = _open_corpora(cfg, convert_dir)
        pretrained, weights = _pretrained(cfg) if cfg.pretrained_model else (None, None)
        self.lm_config = _model_config(cfg, corpora, pretrained)
        self.dls = _make_loaders(cfg, corpora, dist.rank, dist.world_size, dist.device)

        _seed_everything(cfg.seed)
        model = build_language_model(self.lm_config)
        if weights is not None:
            _load_weights(model, weights, str(cfg.pretrained_model))
        if dist.world_size > 1:
            # Distinct dropout masks per process; DDP gives every process rank 0's weights.
            seq = np.random.SeedSequence([cfg.seed, dist.rank])
            torch.manual_seed(int(seq.generate_state(1, np.uint64)[0]))

        self.guard = NonFiniteLossGuard(dist.world_size)
        cbs: list[Callback] = [GradientClip(0.1), *rnn_cbs(alpha=2, beta=1)]
        if not for_lr_find:
            cbs.append(self.guard)
        if dist.world_size > 1:
            cbs.append(_DistributedDataParallel(dist.device))
        self.learn = Learner(
            self.dls,
            model,
            loss_func=CrossEntropyLossFlat(),
            opt_func=partial(Adam, wd=0.1, eps=1e-7),
            splitter=language_model_split,
            cbs=[*cbs, *callbacks],
            metrics=[accuracy, Perplexity()],
            path=cfg.save_path,
        )
        self.learn.logger = noop  # per-epoch lines go through logging instead
        if not cfg.progress or dist.rank > 0:
            self.learn.remove_cb(ProgressCallback)
        if cfg.precision != "fp32":
            if dist.device.type == "cuda":
                self.learn.add_cb(MixedPrecision(amp_mode=cfg.precision))
            else:
                logger.warning(
                    "--%s is for CUDA only; training in fp32 on %s", cfg.precision, dist.device
                )
        if dist.rank == 0:
            n_params = sum(p.numel() for p in model.parameters())
            logger.info(
                "model: %s, vocab %d, emb %d, %d layers of %d, %.2fM parameters, on %s",
                self.lm_config.arch,
                self.lm_config.vocab_size,
                self.lm_config.emb_size,
                self.lm_config.n_layers,
                self.lm_config.hidden_size,
                n_params / 1e6,
                dist.device,
            )

    # -- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(self, learn: Learner, phase_index: int, epochs_done_in_phase: int) -> None:
        """Write the end-of-epoch state (rank 0; every process contributes its RNG state)."""
        rng = _rng_state()
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            torch_dist.all_gather_object(gathered, rng)
            rng_states = gathered
        else:
            rng_states = [rng]
        if self.rank == 0:
            smooth = learn.recorder.smooth_loss
            scaler = getattr(learn, "scaler", None)
            state = {
                "model": get_model(learn.model).state_dict(),
                "opt": plain_state(learn.opt.state_dict()),
                "progress": {
                    "phase": phase_index,
                    "epochs_done_in_phase": epochs_done_in_phase,
                    "epochs_done": len(self.history),
                },
                "rng": rng_states,
                "smooth_loss": {
                    "val": smooth.val.detach().cpu().as_subclass(torch.Tensor).clone(),
                    "count": smooth.count,
                },
                "scaler": scaler.state_dict() if scaler is not None else None,
                "history": list(self.history),
                "config": self.cfg.to_dict(),
                "lm_config": self.lm_config.to_dict(),
                "world_size": self.world_size,
            }
            self.paths.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            save_pth(state, self.paths.checkpoint_dir / CHECKPOINT_FILE)
            logger.debug("checkpoint written after epoch %d", len(self.history))
        self.dist.barrier()

    def load_checkpoint(self) -> dict[str, Any] | None:
        path = self.paths.checkpoint_dir / CHECKPOINT_FILE
        if not path.is_file():
            if self.rank == 0:
                logger.info("no checkpoint at %s: starting from scratch", path)
            return None
        state = load_pth(path, map_location="cpu")
        saved = state.get("config", {})
        current = self.cfg.to_dict()
        diffs = [
            f"{k}: {saved.get(k)!r} -> {v!r}"
            for k, v in current.items()
            if k not in _RESUMABLE_CHANGES and saved.get(k) != v
        ]
        if diffs:
            raise InputError(
                f"cannot resume from {path}: the run's settings changed ({'; '.join(diffs)}); "
                "use the same settings, or another --exp-name to start afresh"
            )
        for k in ("pretrain_lr", "finetune_lr"):
            if saved.get(k) != current[k]:
                logger.warning(
                    "resuming with %s %s (the checkpoint used %s)", k, current[k], saved.get(k)
                )
        return state


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(history)


def _save_outputs(run: _Run) -> None:
    """Write the sidecar and history, then the ``.pth`` (make's target); drop the checkpoint."""
    learn, paths = run.learn, run.paths
    get_model(learn.model).reset()
    run.lm_config.save(paths.config)
    _write_history(paths.history, run.history)
    save_pth(_final_state(learn), paths.model)
    shutil.rmtree(paths.checkpoint_dir, ignore_errors=True)


def _final_state(learn: Learner) -> dict[str, Any]:
    """``{'model', 'opt'}`` as ``Learner.save`` has it, but loadable with plain ``torch.load``.

    fastai's own ``save_model`` pickles the optimizer's ``L`` and numpy scalars, which
    ``weights_only=True`` refuses; and tensors saved on CUDA would not load on a CPU-only machine.
    """
    model_state = get_model(learn.model).state_dict()
    for key, value in model_state.items():  # in place: keeps the state dict's _metadata
        model_state[key] = value.detach().cpu()
    return {"model": model_state, "opt": _to_cpu(plain_state(learn.opt.state_dict()))}


def _to_cpu(obj: Any) -> Any:
    """The plain structure ``obj`` with every tensor moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(item) for item in obj)
    return obj


def _diverged_message(run: _Run, phase_index: int) -> str:
    info = run.guard.tripped
    offset = sum(p.epochs for p in run.phases[:phase_index])
    ckpt = run.paths.checkpoint_dir / CHECKPOINT_FILE
    if ckpt.is_file():
        last_good = f"the last good checkpoint (after epoch {len(run.history)}) is {ckpt}"
        rerun = "rerun with --resume to continue from it"
    else:
        last_good, rerun = "no epoch finished, so there is no checkpoint", "rerun"
    return (
        f"training diverged: the {info['stage']} loss became {info['loss']} at epoch "
        f"{offset + info['epoch'] + 1}, batch {info['batch']}; {last_good}. Lower the learning "
        f"rate (--pretrain-lr/--finetune-lr; --lr-find helps pick one) and {rerun}"
    )


def train_language_model(cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> TrainSummary:
    """Train (or fine-tune) a language model as ``cfg`` says and write its outputs.

    Args:
        callbacks: extra fastai callbacks added to the Learner (e.g. for tests).

    Raises:
        InputError: bad inputs (sizes, vocabulary, files) or a run that cannot be resumed.
        TrainingDiverged: the loss became NaN/inf; nothing but the checkpoint was written.
    """
    started = time.perf_counter()
    dist = _setup_distributed(cfg.device)
    try:
        with tempfile.TemporaryDirectory(prefix="lm-corpus-") as convert_dir:
            run = _Run(cfg, dist, Path(convert_dir), callbacks)
            try:
                resumed_after = _train_phases(run)
            except KeyboardInterrupt:
                if dist.rank == 0 and run.history:
                    logger.warning(
                        "interrupted; the checkpoint after epoch %d is in %s: rerun with --resume "
                        "to continue",
                        len(run.history),
                        run.paths.checkpoint_dir,
                    )
                raise
            if dist.rank == 0:
                _save_outputs(run)
            dist.barrier()
    finally:
        dist.close()
    return TrainSummary(
        run.lm_config, run.history, run.paths, time.perf_counter() - started, resumed_after
    )


def _train_phases(run: _Run) -> int | None:
    """Run the plan's phases, from the checkpoint when resuming; the epochs it resumed after."""
    learn, cfg = run.learn, run.cfg
    state = run.load_checkpoint() if cfg.resume else None
    next_phase, next_epoch, resumed_after = 0, 0, None
    if state is not None:
        get_model(learn.model).load_state_dict(state["model"])
        run.history = list(state["history"])
        progress = state["progress"]
        next_phase, next_epoch = progress["phase"], progress["epochs_done_in_phase"]
        if next_epoch >= run.phases[next_phase].epochs:
            next_phase, next_epoch = next_phase + 1, 0
        resumed_after = progress["epochs_done"]
        if run.rank == 0:
            logger.info("resuming after epoch %d of %d", resumed_after, run.total_epochs)
    for index, phase in enumerate(run.phases):
        if index < next_phase:
            continue
        # freeze_to / unfreeze create the optimizer and clear its state, as at any phase start.
        if phase.frozen:
            learn.freeze_to(-1)
        else:
            learn.unfreeze()
        restore = None
        start_epoch = 0
        if state is not None and index == next_phase:
            start_epoch = next_epoch
            if start_epoch > 0:
                _restore_optimizer(learn, state["opt"])
            restore = state
        if run.rank == 0 and phase.name != "pretrain":
            logger.info(
                "phase %s: %d epoch(s) at lr %g%s",
                phase.name,
                phase.epochs,
                phase.lr,
                " (recurrent layers frozen)" if phase.frozen else "",
            )
        bookkeeping = _EpochBookkeeping(run, index, start_epoch, restore)
        learn.fit_one_cycle(
            phase.epochs,
            phase.lr,
            moms=MOMS,
            div=phase.div,
            pct_start=phase.pct_start,
            start_epoch=start_epoch,
            cbs=[bookkeeping],
        )
        if run.guard.tripped is not None:
            raise TrainingDiverged(_diverged_message(run, index))
    if state is not None and next_phase >= len(run.phases):
        # Every epoch was done; only the outputs were missing. Restore the final optimizer.
        if run.phases[-1].frozen:
            learn.freeze_to(-1)
        else:
            learn.unfreeze()
        _restore_optimizer(learn, state["opt"])
    return resumed_after


def _restore_optimizer(learn: Learner, saved: dict[str, Any]) -> None:
    """Load a checkpoint's plain optimizer state into ``learn.opt``.

    ``hypers`` becomes an ``L`` again, as fastai builds it. The checkpoint is read onto the CPU,
    so each state tensor moves to its parameter's device (else a CUDA step would mix devices).
    """
    learn.opt.load_state_dict({"state": list(saved["state"]), "hypers": L(saved["hypers"])})
    for param, param_state in learn.opt.state.items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                param_state[key] = value.to(param.device)


# ---------------------------------------------------------------------------------------------
# Learning-rate finder
# ---------------------------------------------------------------------------------------------


def find_learning_rate(
    cfg: TrainConfig, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100
) -> LRFindSummary:
    """Run fastai's ``lr_find`` on the model as it would start training; save the plot as PNG.

    The model, data and optimizer are those of the first phase (fine-tuning: the pretrained
    weights with the recurrent layers frozen). Nothing else is written.
    """
    started = time.perf_counter()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("--lr-find runs in one process: start it without torchrun")
    dist = _setup_distributed(cfg.device)
    with tempfile.TemporaryDirectory(prefix="lm-lr-find-") as work:
        run = _Run(
            dataclasses.replace(cfg, resume=False, save_path=Path(work)),
            dist,
            Path(work) / "corpus",
            for_lr_find=True,
        )
        learn = run.learn
        if run.phases[0].frozen:
            learn.freeze_to(-1)
        suggestion = learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it, show_plot=False)
        suggested = float(suggestion.valley)
        plot_path = output_paths(cfg.save_path, cfg.exp_name).lr_find_plot
        _plot_lr_find(learn.recorder.lrs, learn.recorder.losses, suggested, plot_path)
    return LRFindSummary(suggested, plot_path, time.perf_counter() - started)


def _plot_lr_find(lrs: list[float], losses: list[Any], suggested: float, path: Path) -> None:
    """fastai's LR-finder plot, drawn on an Agg canvas (no display, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    skip_end = 5 if len(lrs) > 10 else 0
    lrs = [float(x) for x in lrs[: len(lrs) - skip_end]]
    losses = [_as_float(x) for x in losses[: len(losses) - skip_end]]
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(lrs, losses)
    if lrs:
        idx = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - math.log(suggested))))
        ax.plot(lrs[idx], losses[idx], "o", c="C1", label=f"valley: {suggested:.2e}")
        ax.legend(loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("Learning Rate")
    ax.set_ylabel("Loss")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
