"""Stage 08: fine-tune a fastai ULMFiT/MultiFiT text classifier on a stage-04 language model.

The recipe is fastai's ``text_classifier_learner`` with ULMFiT's gradual unfreezing: the model of
``get_text_classifier`` (:mod:`lm_training.classifier_model`), ``CrossEntropyLossFlat``,
stage 04's ``Adam(wd=0.1, eps=1e-7)``, the classifier layer groups, ``rnn_cbs(alpha=2, beta=1)``
(AR/TAR) and no gradient clipping, metric accuracy, mixed precision on CUDA only; one
``fit_one_cycle`` per phase of :func:`~lm_training.classifier_config.plan_classifier_phases`
with ``moms=(0.8, 0.7, 0.8)``.

As stage 04 (and with its machinery, :mod:`lm_training.checkpoint`): a checkpoint after every
epoch in ``SAVE_PATH/EXP.ckpt/last.pth`` that ``resume=True`` continues from (same settings
required; on CPU the result equals an uninterrupted run's), a NaN/inf guard, and outputs written
atomically, last the ``.pth`` (make's target): ``EXP.json`` (the encoder's
:class:`~ulmfit_core.lm_config.LMConfig` fields and the ``"classifier"`` object,
:func:`~ulmfit_core.classifier_config.write_classifier_sidecar`), ``EXP.history.csv`` and
``EXP.pth`` (``{'model', 'opt'}`` in plain types, as :func:`~lm_training.checkpoint.final_state`).
With ``save_best`` the ``.pth`` holds the model and optimizer of the epoch with the best
validation accuracy (kept in the checkpoint too, so a resumed run still knows them).

One process only: ``SortedDL`` has no distributed sampler here.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import get_model

from lm_training.callbacks import NonFiniteLossGuard
from lm_training.checkpoint import (
    final_state,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from lm_training.classifier_config import (
    CLASSIFIER_RESUMABLE,
    ClassifierTrainConfig,
    ClassifierTrainSummary,
    plan_classifier_phases,
)
from lm_training.classifier_data import make_classifier_loaders, read_classifier_data
from lm_training.classifier_model import (
    build_text_classifier,
    check_vocabulary,
    classifier_head,
    classifier_lm_config,
    classifier_split,
    load_encoder_weights,
)
from lm_training.config import OutputPaths, Phase, output_paths
from lm_training.distributed import Distributed, setup_distributed
from lm_training.history import CLASSIFIER_HISTORY_COLUMNS, as_float, write_history
from lm_training.learner import build_learner
from lm_training.phases import (
    PhaseEpochCallback,
    diverged_message,
    resume_point,
    run_phases,
)
from lm_training.pretrained import read_pretrained
from pretraining_utils.encode import load_processor
from ulmfit_core.classifier_config import ClassifierHead, write_classifier_sidecar
from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import LMConfig
from ulmfit_torch.checkpoint_io import save_pth

__all__ = ["ClassifierRun", "prepare_classifier_run", "train_text_classifier"]

logger = logging.getLogger(__name__)


@dataclass
class ClassifierRun:
    """One run's built parts and what its epochs add: the history and, with ``save_best``, the
    best epoch so far (``{'epoch', 'accuracy', 'model', 'opt'}``, on the CPU)."""

    cfg: ClassifierTrainConfig
    dist: Distributed
    lm_config: LMConfig
    head: ClassifierHead
    learn: Learner
    guard: NonFiniteLossGuard
    n_train: int
    n_valid: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    paths: OutputPaths = field(init=False)
    phases: list[Phase] = field(init=False)

    def __post_init__(self) -> None:
        self.paths = output_paths(self.cfg.save_path, self.cfg.exp_name)
        self.phases = plan_classifier_phases(self.cfg.num_epochs, self.cfg.lr)

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    @property
    def best_epoch(self) -> int:
        """The epoch (1-based) of the best validation accuracy, the first of ties (NaN last)."""
        scores = [row["accuracy"] for row in self.history]
        ranked = [(math.inf if math.isnan(s) else -s, i) for i, s in enumerate(scores)]
        return min(ranked)[1] + 1


def prepare_classifier_run(
    cfg: ClassifierTrainConfig, dist: Distributed, callbacks: Sequence[Callback] = ()
) -> ClassifierRun:
    """Read and check every input, then build the seeded, pretrained model and its Learner.

    Raises:
        InputError: bad data, labels, SentencePiece model or language model; nothing is written.
    """
    processor = load_processor(cfg.spm_model)
    pretrained, weights = read_pretrained(cfg.pretrained_model)
    sha = check_vocabulary(pretrained, processor, cfg.spm_model, str(cfg.pretrained_model))
    data = read_classifier_data(cfg, processor)
    lm_config = classifier_lm_config(pretrained, cfg.drop_mult, sha)

    seed_everything(cfg.seed)
    model = build_text_classifier(
        lm_config, len(data.labels), bptt=cfg.bptt, max_len=cfg.max_len, lin_ftrs=cfg.lin_ftrs
    )
    load_encoder_weights(model, weights, str(cfg.pretrained_model))
    dls = make_classifier_loaders(
        data, batch_size=cfg.batch_size, bptt=cfg.bptt, device=dist.device
    )
    guard = NonFiniteLossGuard()
    learn = build_learner(
        model,
        dls,
        device=dist.device,
        precision=cfg.precision,
        callbacks=[guard, *callbacks],
        metrics=[accuracy],
        progress=cfg.progress,
        path=cfg.save_path,
        loss_func=CrossEntropyLossFlat(),
        splitter=classifier_split,
        clip=None,
    )
    head = classifier_head(model, data.labels)
    logger.info(
        "model: %s classifier, vocab %d, emb %d, %d layers of %d, head %s, %.2fM parameters, on %s",
        lm_config.arch,
        lm_config.vocab_size,
        lm_config.emb_size,
        lm_config.n_layers,
        lm_config.hidden_size,
        head.head_sizes,
        sum(p.numel() for p in model.parameters()) / 1e6,
        dist.device,
    )
    return ClassifierRun(cfg, dist, lm_config, head, learn, guard, len(data.train), len(data.valid))


def train_text_classifier(
    cfg: ClassifierTrainConfig, callbacks: Sequence[Callback] = ()
) -> ClassifierTrainSummary:
    """Train a text classifier as ``cfg`` says and write its outputs.

    Args:
        callbacks: extra fastai callbacks added to the Learner (e.g. for tests).

    Raises:
        InputError: bad inputs, or a run that cannot be resumed; nothing is written.
        TrainingDiverged: the loss became NaN/inf; nothing but the checkpoint was written.
    """
    started = time.perf_counter()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("stage 08 trains in one process: run it without torchrun")
    dist = setup_distributed(cfg.device)
    run = prepare_classifier_run(cfg, dist, callbacks)
    try:
        resumed_after = _train_phases(run)
    except KeyboardInterrupt:
        if run.history:
            logger.warning(
                "interrupted; the checkpoint after epoch %d is in %s: rerun with --resume to "
                "continue",
                len(run.history),
                run.paths.checkpoint_dir,
            )
        raise
    saved_epoch = _save_outputs(run)
    return ClassifierTrainSummary(
        lm_config=run.lm_config,
        head=run.head,
        history=run.history,
        paths=run.paths,
        seconds=time.perf_counter() - started,
        n_train=run.n_train,
        n_valid=run.n_valid,
        best_epoch=run.best_epoch,
        saved_epoch=saved_epoch,
        resumed_after_epoch=resumed_after,
    )


def _train_phases(run: ClassifierRun) -> int | None:
    """Run the plan's phases, from the checkpoint when resuming; the epochs it resumed after."""
    learn, cfg = run.learn, run.cfg
    state = None
    if cfg.resume:
        state = load_checkpoint(
            run.paths.checkpoint_dir,
            cfg,
            resumable=CLASSIFIER_RESUMABLE,
            warn_on_change=("lr",),
        )
    point = resume_point(learn, state, run.phases)
    if state is not None:
        run.history, run.best = list(state["history"]), state.get("best")
        logger.info("resuming after epoch %d of %d", point.epochs_done, run.total_epochs)
    run_phases(
        learn,
        run.phases,
        state,
        point,
        bookkeeping=lambda index, start, restore: _EpochBookkeeping(run, index, start, restore),
        guard=run.guard,
        diverged=lambda index: diverged_message(
            run.guard, run.phases, index, run.paths.checkpoint_dir, len(run.history), "--lr"
        ),
        on_phase=lambda phase: logger.info(
            "phase %s: %d epoch(s), %s", phase.name, phase.epochs, _describe(phase)
        ),
    )
    return point.epochs_done


class _EpochBookkeeping(PhaseEpochCallback):
    """Per epoch of one phase: history row, best epoch, log line, checkpoint; resume restore."""

    def __init__(
        self, run: ClassifierRun, phase_index: int, start_epoch: int, restore: dict | None
    ) -> None:
        super().__init__(run.phases, phase_index, start_epoch, restore)
        self.run = run

    def after_epoch(self) -> None:
        if self.epoch < self.start_epoch:  # skipped by SkipToEpoch when resuming
            return
        recorder, run = self.learn.recorder, self.run
        values = dict(zip(recorder.metric_names[1:-1], recorder.values[-1], strict=False))
        done = self.offset + self.epoch + 1
        row = {
            "epoch": done,
            "phase": self.phase.name,
            **{k: as_float(values.get(k)) for k in CLASSIFIER_HISTORY_COLUMNS[2:-1]},
            "time": round(time.perf_counter() - self._started, 3),
        }
        run.history.append(row)
        if run.cfg.save_best and run.best_epoch == done:
            state = final_state(self.learn, copy=True)  # copies: training goes on
            run.best = {"epoch": done, "accuracy": row["accuracy"], **state}
        logger.info(
            "epoch %d/%d (%s): train_loss %.4f valid_loss %.4f accuracy %.4f (%.1f s)%s",
            done,
            run.total_epochs,
            self.phase.name,
            row["train_loss"],
            row["valid_loss"],
            row["accuracy"],
            row["time"],
            ", the best so far" if run.best_epoch == done and done > 1 else "",
        )
        save_checkpoint(
            self.learn,
            run.paths.checkpoint_dir,
            run.dist,
            progress={
                "phase": self.phase_index,
                "epochs_done_in_phase": self.epoch + 1,
                "epochs_done": len(run.history),
            },
            history=run.history,
            config=run.cfg.to_dict(),
            lm_config=run.lm_config.to_dict(),
            extra={"best": run.best},
        )


def _save_outputs(run: ClassifierRun) -> int:
    """Write the sidecar and history, then the ``.pth``; drop the checkpoint. Returns the epoch
    whose weights were written."""
    paths = run.paths
    get_model(run.learn.model).reset()
    state, epoch = final_state(run.learn), len(run.history)
    if run.cfg.save_best and run.best is not None:
        state = {"model": run.best["model"], "opt": run.best["opt"]}
        epoch = run.best["epoch"]
        logger.info("writing the weights of epoch %d (best validation accuracy)", epoch)
    write_classifier_sidecar(paths.config, run.lm_config.to_dict(), run.head)
    write_history(paths.history, run.history, CLASSIFIER_HISTORY_COLUMNS)
    save_pth(state, paths.model)
    shutil.rmtree(paths.checkpoint_dir, ignore_errors=True)
    return epoch


def _describe(phase: Phase) -> str:
    lr = f"peak lr {phase.lr:g}"
    if phase.lr_spread is not None:
        lr += f" (the first layer group {phase.lr / phase.lr_spread:.3g})"
    if phase.frozen:
        return f"the last {phase.trainable_groups} layer group(s) trained, {lr}"
    return f"every layer group trained, {lr}"
