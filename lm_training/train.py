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

from fastai.callback.core import Callback
from fastai.torch_core import get_model

from lm_training.checkpoint import (
    final_state,
)
from lm_training.config import Phase, TrainConfig, TrainSummary
from lm_training.distributed import setup_distributed
from lm_training.history import HISTORY_COLUMNS, as_float, write_history
from lm_training.phases import (
    PhaseEpochCallback,
    diverged_message,
    resume_point,
    run_phases,
)
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
    learn = run.learn
    state = run.load_checkpoint() if run.cfg.resume else None
    point = resume_point(learn, state, run.phases)
    if state is not None:
        run.history = list(state["history"])
        if run.rank == 0:
            logger.info("resuming after epoch %d of %d", point.epochs_done, run.total_epochs)

    def on_phase(phase: Phase) -> None:
        if run.rank == 0 and phase.name != "pretrain":
            logger.info(
                "phase %s: %d epoch(s) at lr %g%s",
                phase.name,
                phase.epochs,
                phase.lr,
                " (recurrent layers frozen)" if phase.frozen else "",
            )

    run_phases(
        learn,
        run.phases,
        state,
        point,
        bookkeeping=lambda index, start, restore: _EpochBookkeeping(run, index, start, restore),
        guard=run.guard,
        diverged=lambda index: diverged_message(
            run.guard,
            run.phases,
            index,
            run.paths.checkpoint_dir,
            len(run.history),
            "the learning rate (--pretrain-lr/--finetune-lr; --lr-find helps pick one)",
        ),
        on_phase=on_phase,
    )
    return point.epochs_done


class _EpochBookkeeping(PhaseEpochCallback):
    """Per epoch of one phase: line order, history row, log line, checkpoint; resume restore."""

    def __init__(
        self, run: TrainingRun, phase_index: int, start_epoch: int, restore: dict | None
    ) -> None:
        super().__init__(
            run.phases, phase_index, start_epoch, restore, rank=run.rank, world_size=run.world_size
        )
        self.run = run

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
