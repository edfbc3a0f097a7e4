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

The parts live in their own modules: the settings in :mod:`lm_training.config`, the data in
:mod:`lm_training.loaders`, the pretrained model in :mod:`lm_training.pretrained`, the Learner
in :mod:`lm_training.learner`, the assembled run in :mod:`lm_training.run`, checkpoints and RNG
states in :mod:`lm_training.checkpoint`, the processes in :mod:`lm_training.distributed`. This
module runs the plan's phases and writes the outputs.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastai.callback.core import Callback
from fastai.torch_core import get_model

from lm_training.callbacks import TrainingDiverged
from lm_training.checkpoint import (
    CHECKPOINT_FILE,
    final_state,
    restore_optimizer,
    set_rng_state,
)
from lm_training.config import TrainConfig, TrainSummary
from lm_training.distributed import setup_distributed
from lm_training.history import HISTORY_COLUMNS, as_float, write_history
from lm_training.learner import fit_phase
from lm_training.run import TrainingRun, prepare_run
from ulmfit_torch.checkpoint_io import save_pth

__all__ = ["train_language_model"]

logger = logging.getLogger(__name__)


def train_language_model(cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> TrainSummary:
    """Train (or fine-tune) a language model as ``cfg`` says and write its outputs.

    Args:
        callbacks: extra fastai callbacks added to the Learner (e.g. for tests).

    Raises:
        InputError: bad inputs (sizes, vocabulary, files) or a run that cannot be resumed.
        TrainingDiverged: the loss became NaN/inf; nothing but the checkpoint was written.
    """
    started = time.perf_counter()
    dist = setup_distributed(cfg.device)
    try:
        with tempfile.TemporaryDirectory(prefix="lm-corpus-") as convert_dir:
            run = prepare_run(cfg, dist, Path(convert_dir), callbacks)
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


def _train_phases(run: TrainingRun) -> int | None:
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
                restore_optimizer(learn, state["opt"])
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
        fit_phase(learn, phase, start_epoch=start_epoch, cbs=[bookkeeping])
        if run.guard.tripped is not None:
            raise TrainingDiverged(_diverged_message(run, index))
    if state is not None and next_phase >= len(run.phases):
        # Every epoch was done; only the outputs were missing. Restore the final optimizer.
        if run.phases[-1].frozen:
            learn.freeze_to(-1)
        else:
            learn.unfreeze()
        restore_optimizer(learn, state["opt"])
    return resumed_after


class _EpochBookkeeping(Callback):
    """Per epoch of one phase: line order, history row, log line, checkpoint; resume restore."""

    order = 90  # after Recorder (50), ParamScheduler (60) and SkipToEpoch (70)

    def __init__(
        self, run: TrainingRun, phase_index: int, start_epoch: int, restore: dict | None
    ) -> None:
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
            set_rng_state(rng[self.run.rank])
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
            **{k: as_float(values.get(k)) for k in HISTORY_COLUMNS[2:-1]},
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


def _save_outputs(run: TrainingRun) -> None:
    """Write the sidecar and history, then the ``.pth`` (make's target); drop the checkpoint."""
    learn, paths = run.learn, run.paths
    get_model(learn.model).reset()
    run.lm_config.save(paths.config)
    write_history(paths.history, run.history)
    save_pth(final_state(learn), paths.model)
    shutil.rmtree(paths.checkpoint_dir, ignore_errors=True)


def _diverged_message(run: TrainingRun, phase_index: int) -> str:
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
