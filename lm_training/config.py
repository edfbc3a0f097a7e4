"""Stage 04's settings: the run's :class:`TrainConfig`, its phases, output paths and summaries.

:class:`TrainConfig` holds what the run does (data, schedule, devices, outputs). Its architecture
fields (``arch``, the sizes, the dropouts, ``drop_mult``) are not a second model schema: they are
*requests* for the one schema, :class:`~ulmfit_core.lm_config.LMConfig`, which only exists once
the corpus (vocabulary, SPM model) and, when fine-tuning, the pretrained model are known.
:meth:`TrainConfig.lm_config` resolves them into it. They stay flat fields because the CLI's
flags map onto them one to one and the checkpoint records them flat (resuming compares them
key by key).

Standard library and :mod:`ulmfit_core` only.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ulmfit_core.artifacts import library_versions
from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import ARCHS, DROPOUT_NAMES, LMConfig

__all__ = [
    "ARCH_FIELDS",
    "PRECISIONS",
    "EpochHistory",
    "LRFindSummary",
    "OutputPaths",
    "Phase",
    "TrainConfig",
    "TrainSummary",
    "checkpoint_dir",
    "output_paths",
    "plan_phases",
    "pretrain_phase",
]

PRECISIONS = ("fp32", "fp16", "bf16")
# The LMConfig fields a run may request (None: the default, or the pretrained model's).
ARCH_FIELDS = ("arch", "emb_size", "hidden_size", "n_layers")


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

    @property
    def architecture(self) -> dict[str, Any]:
        """The requested ``arch`` and sizes (``None``: not requested)."""
        return {name: getattr(self, name) for name in ARCH_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as absolute strings (so that ``a/b`` and ``./a/b`` compare equal)."""
        return {
            k: (str(Path(v).resolve()) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(self).items()
        }

    def lm_config(
        self,
        vocab_size: int,
        spm_model_sha256: str | None,
        pretrained: LMConfig | None = None,
    ) -> LMConfig:
        """The model this run trains: the requests resolved against the corpus and, when
        fine-tuning, the pretrained model's config (whose architecture wins; requests that
        contradict it are refused).

        Args:
            vocab_size: the training corpus's vocabulary.
            spm_model_sha256: the SPM model the corpus was encoded with, when it records one.
            pretrained: the config of :attr:`pretrained_model`.

        Raises:
            InputError: the pretrained model does not fit the corpus or the requests.
        """
        versions = library_versions("torch", "fastai", "fastcore")
        if pretrained is None:
            return LMConfig.create(
                self.arch or "awd-lstm",
                vocab_size,
                emb_size=self.emb_size,
                hidden_size=self.hidden_size,
                n_layers=self.n_layers,
                drop_mult=self.drop_mult,
                dropouts=self.dropouts,
                spm_model_sha256=spm_model_sha256,
                versions=versions,
            )
        source = self.pretrained_model
        if pretrained.vocab_size != vocab_size:
            raise InputError(
                f"the pretrained model {source} has a vocabulary of {pretrained.vocab_size} "
                f"pieces, but the training corpus has {vocab_size}; fine-tuning needs the corpus "
                "encoded with the pretrained model's SentencePiece model"
            )
        pre_sha, sha = pretrained.spm_model_sha256, spm_model_sha256
        if pre_sha and sha and pre_sha != sha:
            raise InputError(
                f"the pretrained model {source} was trained with SPM model sha256 {pre_sha}, "
                f"but the corpus was encoded with {sha}; encode it with the pretrained model's "
                "SPM model"
            )
        clashes = [
            f"{name}={value} (the model has {getattr(pretrained, name)})"
            for name, value in self.architecture.items()
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
            drop_mult=self.drop_mult,
            dropouts=self.dropouts,
            spm_model_sha256=pre_sha or sha,
            versions=versions,
        )


@dataclass(frozen=True)
class Phase:
    """One ``fit_one_cycle`` call of the plan.

    Args:
        lr: the peak learning rate (of the last layer group).
        frozen: only the last ``trainable_groups`` layer groups train (``freeze_to(-n)``);
            else every group does (``unfreeze()``).
        div, pct_start: ``fit_one_cycle``'s.
        lr_spread: discriminative learning rates: the first layer group peaks at
            ``lr / lr_spread`` and the others evenly spaced up to ``lr`` on a log scale
            (fastai's ``slice(lr / lr_spread, lr)``); ``None``: ``lr`` for every group.
    """

    name: str
    epochs: int
    lr: float
    frozen: bool
    div: float
    pct_start: float = 0.25
    trainable_groups: int = 1
    lr_spread: float | None = None

    def __post_init__(self) -> None:
        if self.trainable_groups < 1:
            raise InputError(f"phase {self.name}: trainable_groups must be at least 1")
        if self.lr_spread is not None and not self.lr_spread >= 1.0:
            raise InputError(f"phase {self.name}: lr_spread must be at least 1")

    @property
    def lr_max(self) -> float | slice:
        """``fit_one_cycle``'s ``lr_max``: ``lr``, or ``slice(lr / lr_spread, lr)``."""
        return self.lr if self.lr_spread is None else slice(self.lr / self.lr_spread, self.lr)


def pretrain_phase(epochs: int, lr: float) -> Phase:
    """The one phase of pretraining: everything trained, one cycle of peak ``lr``, ``div=10``."""
    return Phase("pretrain", epochs, lr, frozen=False, div=10.0)


def plan_phases(cfg: TrainConfig) -> list[Phase]:
    """Pretraining: one phase. Fine-tuning: 1 frozen epoch, then ``num_epochs - 1`` unfrozen."""
    if cfg.pretrained_model is None:
        return [pretrain_phase(cfg.num_epochs, cfg.pretrain_lr)]
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


class EpochHistory:
    """``epochs`` and ``final`` of a run summary with a per-epoch ``history`` (stages 04, 08)."""

    history: list[dict[str, Any]]

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


@dataclass(frozen=True)
class TrainSummary(EpochHistory):
    lm_config: LMConfig
    history: list[dict[str, Any]]
    paths: OutputPaths
    seconds: float
    resumed_after_epoch: int | None


@dataclass(frozen=True)
class LRFindSummary:
    suggested_lr: float
    plot_path: Path
    seconds: float
