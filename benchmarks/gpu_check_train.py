"""The GPU check's LM training runs: stage 04's Learner for a few steps on one repeated batch.

A separate module because it imports fastai (about 5 s): ``benchmarks/gpu_check.py`` imports it
only when it trains, so that ``--help``, the no-CUDA path and its spawned NCCL workers start fast.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastcore.basics import noop

from lm_training.callbacks import NonFiniteLossGuard
from lm_training.config import PRECISIONS, pretrain_phase
from lm_training.learner import build_learner, fit_phase
from lm_training.models import build_language_model
from ulmfit_core.lm_config import LMConfig

logger = logging.getLogger(__name__)

__all__ = ["RepeatedBatchLoader", "StepRecorder", "TrainRun", "train_steps"]

PRETRAIN_LR = 5e-3  # stage 04's default --pretrain-lr


@dataclass(frozen=True)
class TrainRun:
    """What the training steps of one LM recorded.

    ``losses`` are the per-step losses before AR/TAR (``learn.loss``), ``step_seconds`` the
    device-synchronised wall time of each step (forward, backward, optimizer step).
    ``logits_dtype`` is the dtype the model's output had inside the forward (float16/bfloat16
    when mixed precision took effect). ``diverged`` is set when the NaN guard stopped training.
    """

    arch: str
    precision: str
    losses: list[float]
    step_seconds: list[float]
    tokens_per_step: int
    diverged: str | None = None
    logits_dtype: str | None = None


class RepeatedBatchLoader(DataLoader):
    """A fastai ``DataLoader`` that yields the same ``(x, y)`` batch ``steps`` times.

    ``x`` and ``y`` should already be on the device: fastai then moves nothing per batch.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, steps: int, device: torch.device | str
    ) -> None:
        self.x, self.y = x, y
        bs = x.shape[0]
        super().__init__(
            dataset=None, bs=bs, shuffle=False, indexed=False, n=steps * bs, device=device
        )
        self.n_inp = 1

    def create_batches(self, samps):  # noqa: ARG002 - fastai's signature; nothing is sampled
        for _ in range(len(self)):
            yield self.x, self.y


class StepRecorder(Callback):
    """Per training step: ``learn.loss`` and the wall time, with the device synchronised; and
    the logits' dtype, read after ``RNNCallback`` unpacked them and before ``MixedPrecision``
    casts them to float32 for the loss."""

    order = MixedPrecision.order - 1

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.losses: list[float] = []
        self.seconds: list[float] = []
        self.logits_dtype: str | None = None
        self._start = 0.0

    def after_pred(self) -> None:
        if self.training:
            self.logits_dtype = str(getattr(self.learn.pred, "dtype", None))

    def before_batch(self) -> None:
        if self.training:
            self.sync()
            self._start = time.perf_counter()

    def after_batch(self) -> None:
        if self.training:
            self.losses.append(float(self.learn.loss.detach().float()))
            self.sync()
            self.seconds.append(time.perf_counter() - self._start)


def _sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return partial(torch.cuda.synchronize, device)
    return noop


def train_steps(
    arch: str,
    precision: str,
    *,
    vocab_size: int,
    emb_size: int,
    hidden_size: int,
    n_layers: int,
    batch_size: int,
    bptt: int,
    steps: int,
    device: torch.device | str,
    lr: float = PRETRAIN_LR,
    seed: int = 0,
) -> TrainRun:
    """``steps`` optimizer steps of stage 04's Learner on one fixed batch of random ids.

    The Learner is stage 04's, from :func:`lm_training.learner.build_learner`:
    ``CrossEntropyLossFlat``, ``Adam(wd=0.1, eps=1e-7)``, the LM layer-group splitter,
    ``GradientClip(0.1)``, ``rnn_cbs(alpha=2, beta=1)``, its NaN guard, and fastai's
    ``MixedPrecision(amp_mode=...)`` for fp16/bf16; no metrics. It trains one epoch of stage
    04's pretraining phase (:func:`lm_training.learner.fit_phase`: ``fit_one_cycle`` with its
    momentums and ``div=10``); there is no validation. Dropouts are the arch's defaults.

    Raises:
        ValueError: an unknown precision, or fp16/bf16 on a non-CUDA device (stage 04 falls
            back to fp32 there, which would not test mixed precision).
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "fp32" and device.type != "cuda":
        raise ValueError(f"{precision} mixed precision needs CUDA, not {device}")
    config = LMConfig.create(
        arch, vocab_size, emb_size=emb_size, hidden_size=hidden_size, n_layers=n_layers
    )
    torch.manual_seed(seed)
    model = build_language_model(config)
    gen = torch.Generator().manual_seed(seed)
    # Ids from 4 up: the special tokens (unk, pad, bos, eos) do not occur in the stream.
    stream = torch.randint(4, vocab_size, (batch_size, bptt + 1), generator=gen)
    x, y = stream[:, :-1].to(device), stream[:, 1:].to(device)
    guard = NonFiniteLossGuard()
    recorder = StepRecorder(_sync_for(device))
    dls = DataLoaders(
        RepeatedBatchLoader(x, y, steps, device),
        RepeatedBatchLoader(x, y, 0, device),  # an empty validation set: nothing to score
        device=device,
    )
    # fastai's per-epoch table is off (the check prints its own), and so are the progress bars.
    learn = build_learner(
        model, dls, device=device, precision=precision, callbacks=[guard, recorder], metrics=()
    )
    logger.info(
        "training %s %s: %dx%d, emb %d, vocab %d, batch %dx%d, %d steps",
        arch, precision, n_layers, hidden_size, emb_size, vocab_size, batch_size, bptt, steps,
    )  # fmt: skip
    try:
        fit_phase(learn, pretrain_phase(1, lr))
    finally:
        # The callbacks and the Learner refer to each other: collect the cycle so that the
        # next run does not share the GPU with this model and its optimizer state.
        learn.remove_cbs([guard, recorder])
        del learn, model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    diverged = None
    if guard.tripped is not None:
        diverged = f"loss {guard.tripped['loss']} at step {guard.tripped['batch']}"
    return TrainRun(
        arch,
        precision,
        recorder.losses,
        recorder.seconds,
        batch_size * bptt,
        diverged,
        recorder.logits_dtype,
    )
