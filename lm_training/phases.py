"""Running a plan of ``fit_one_cycle`` phases, from a checkpoint when resuming (stages 04 and 08).

Each phase freezes or unfreezes the model (:func:`~lm_training.learner.freeze_for_phase`, which
also creates the optimizer and clears its state, as at any phase start), then fits its epochs;
resuming starts inside the phase the checkpoint stopped in, with its optimizer state, and a
stage's own per-epoch callback restores the RNG states (:func:`~lm_training.checkpoint.
restore_fit_state`). A NaN/inf loss ends the run with :class:`TrainingDiverged`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.torch_core import get_model

from lm_training.callbacks import NonFiniteLossGuard, TrainingDiverged
from lm_training.checkpoint import CHECKPOINT_FILE, restore_fit_state, restore_optimizer
from lm_training.config import Phase
from lm_training.learner import fit_phase, freeze_for_phase

__all__ = ["PhaseEpochCallback", "ResumePoint", "diverged_message", "resume_point", "run_phases"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues: the phase, the epoch within it, the epochs done before."""

    phase: int = 0
    epoch: int = 0
    epochs_done: int | None = None


class PhaseEpochCallback(Callback):
    """What a stage's per-epoch callback for one phase shares: where the phase sits in the
    plan, the restore at the resumed epoch, the epoch's start time (subclasses add
    ``after_epoch``: history, log line, checkpoint)."""

    order = 90  # after Recorder (50), ParamScheduler (60) and SkipToEpoch (70)

    def __init__(
        self,
        phases: Sequence[Phase],
        phase_index: int,
        start_epoch: int,
        restore: dict[str, Any] | None,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.phase_index, self.phase = phase_index, phases[phase_index]
        self.offset = sum(p.epochs for p in phases[:phase_index])  # epochs before this phase
        self.start_epoch, self.restore = start_epoch, restore
        self._rank, self._world_size = rank, world_size
        self._started = 0.0

    def before_epoch(self) -> None:
        if self.restore is not None and self.epoch == self.start_epoch:
            restore_fit_state(
                self.learn,
                self.restore,
                rank=self._rank,
                world_size=self._world_size,
                mid_phase=self.start_epoch > 0,
            )
            self.restore = None
        self._started = time.perf_counter()


def resume_point(
    learn: Learner, state: dict[str, Any] | None, phases: Sequence[Phase]
) -> ResumePoint:
    """Load a checkpoint's model into ``learn`` and say where its run continues."""
    if state is None:
        return ResumePoint()
    get_model(learn.model).load_state_dict(state["model"])
    progress = state["progress"]
    phase, epoch = progress["phase"], progress["epochs_done_in_phase"]
    if epoch >= phases[phase].epochs:
        phase, epoch = phase + 1, 0
    return ResumePoint(phase, epoch, progress["epochs_done"])


def run_phases(
    learn: Learner,
    phases: Sequence[Phase],
    state: dict[str, Any] | None,
    point: ResumePoint,
    *,
    bookkeeping: Callable[[int, int, dict[str, Any] | None], Callback],
    guard: NonFiniteLossGuard,
    diverged: Callable[[int], str],
    on_phase: Callable[[Phase], None] = lambda _phase: None,
) -> None:
    """Fit ``phases`` from ``point`` on.

    Args:
        state: the checkpoint resumed from (its optimizer state is restored mid-phase).
        bookkeeping: ``(phase index, start epoch, checkpoint or None) -> callback`` for the
            phase's ``fit`` (history, checkpoints, the restore at the resumed epoch).
        guard: the Learner's NaN guard; ``diverged(phase index)`` words its error.
        on_phase: called before each phase is fitted (e.g. a log line).

    Raises:
        TrainingDiverged: the loss became NaN/inf.
    """
    for index, phase in enumerate(phases):
        if index < point.phase:
            continue
        freeze_for_phase(learn, phase)
        start_epoch, restore = 0, None
        if state is not None and index == point.phase:
            start_epoch, restore = point.epoch, state
            if start_epoch > 0:
                restore_optimizer(learn, state["opt"])
        on_phase(phase)
        fit_phase(learn, phase, start_epoch, cbs=[bookkeeping(index, start_epoch, restore)])
        if guard.tripped is not None:
            raise TrainingDiverged(diverged(index))
    if state is not None and point.phase >= len(phases):
        # Every epoch was done; only the outputs were missing. Restore the final optimizer.
        freeze_for_phase(learn, phases[-1])
        restore_optimizer(learn, state["opt"])


def diverged_message(
    guard: NonFiniteLossGuard,
    phases: Sequence[Phase],
    phase_index: int,
    checkpoint_dir: Path,
    epochs_done: int,
    lower: str,
) -> str:
    """What :class:`TrainingDiverged` says: where, the last good checkpoint, what to do.

    Args:
        lower: the flags that set the learning rate (e.g. ``"--lr"``).
    """
    info = guard.tripped
    offset = sum(p.epochs for p in phases[:phase_index])
    ckpt = checkpoint_dir / CHECKPOINT_FILE
    if ckpt.is_file():
        last_good = f"the last good checkpoint (after epoch {epochs_done}) is {ckpt}"
        rerun = "rerun with --resume to continue from it"
    else:
        last_good, rerun = "no epoch finished, so there is no checkpoint", "rerun"
    return (
        f"training diverged: the {info['stage']} loss became {info['loss']} at epoch "
        f"{offset + info['epoch'] + 1}, batch {info['batch']}; {last_good}. Lower {lower} "
        f"and {rerun}"
    )
