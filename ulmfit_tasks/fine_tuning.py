"""ULMFiT fine-tuning of a task model, shared by every task driver.

Each task (:mod:`ulmfit_tasks.classifier`, :mod:`~ulmfit_tasks.regressor`,
:mod:`~ulmfit_tasks.tagger`) first builds a :class:`TaskSetup` (data, encoder, head, validation
callback), which :func:`fine_tune` trains (STLR / one-cycle, discriminative learning rates,
gradual unfreezing, AWD weight-drop for a SavedModel backbone) on length-bucketed batches
(:class:`~ulmfit_tasks.batching.BucketedBatches`; fixed-width ones with ``--fixed-seq-len``) and
saves as ``OUT/model.keras``, and which :func:`find_task_lr` sweeps with the LR finder instead.
:func:`write_task` writes the rest of the task directory (:mod:`ulmfit_tasks.task_dir`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ulmfit_core.export_layout import CONFIG_FILE
from ulmfit_keras import (
    DiscriminativeAdam,
    GradualUnfreezing,
    LRFinderResult,
    OneCycleLR,
    SlantedTriangularLR,
    WeightDropCallback,
    discriminative_multipliers,
    find_lr,
    layer_groups,
    read_config,
    weight_drop_variables,
)
from ulmfit_tasks.batching import BucketedBatches
from ulmfit_tasks.config import TrainingConfig
from ulmfit_tasks.rendering import plot_lr_finder
from ulmfit_tasks.task_dir import MODEL_FILE, write_task_files

logger = logging.getLogger(__name__)

__all__ = ["TaskSetup", "find_task_lr", "fine_tune", "write_task"]


def _schedule(name: str, lr: float, total_steps: int):
    """The learning-rate schedule ``name`` (validated by :class:`TrainingConfig`)."""
    if name == "1cycle":
        return OneCycleLR(lr, total_steps)
    return SlantedTriangularLR(lr, total_steps)


@dataclass(frozen=True)
class TaskSetup:
    """A task model ready to train: its data, loss and the validation callback that writes
    ``monitor`` (to ``mode``: ``"max"`` or ``"min"``) into the epoch logs.

    ``train_ids`` are post-padded; ``per_token_targets`` says the targets are per token (the
    tagger's ``(n, width)`` labels), so that a bucketed batch cuts them like the ids.
    """

    export_dir: Path
    spm_path: Path
    backbone: keras.Model
    model: keras.Model
    train_ids: np.ndarray
    train_targets: Any
    loss: Any
    validation: keras.callbacks.Callback
    monitor: str
    mode: str
    truncated: int
    per_token_targets: bool = False


def _hub_weight_drop(config: TrainingConfig, setup: TaskSetup) -> list[keras.callbacks.Callback]:
    """AWD weight-drop for a ``from_hub`` backbone (the Keras encoder drops weights itself)."""
    if config.model_type != "from_hub" or config.awd_off:
        return []
    weight_p = read_config(setup.export_dir / CONFIG_FILE).weight_p
    if weight_p == 0.0:
        return []
    return [WeightDropCallback(weight_drop_variables(setup.backbone), weight_p, seed=config.seed)]


def _fit(
    config: TrainingConfig, setup: TaskSetup, callbacks: list[keras.callbacks.Callback]
) -> keras.callbacks.History:
    """``model.fit`` on length-bucketed batches; on fixed-width ones for a static-shape model."""
    if config.fixed_seq_len is not None:
        return setup.model.fit(
            setup.train_ids,
            setup.train_targets,
            epochs=config.num_epochs,
            batch_size=config.batch_size,
            callbacks=callbacks,
            verbose=0,
        )
    batches = BucketedBatches(
        setup.train_ids,
        setup.train_targets,
        config.batch_size,
        seed=config.seed,
        per_token_targets=setup.per_token_targets,
    )
    logger.info(
        "length-bucketed batches: %.0f%% padding (%.0f%% if padded to the longest)",
        100 * batches.padded_fraction(),
        100 * (1 - batches.lengths.mean() / setup.train_ids.shape[1]),
    )
    # One endless dataset over the epochs: Keras keeps its iterator when given the epoch length.
    return setup.model.fit(
        batches.dataset(),
        epochs=config.num_epochs,
        steps_per_epoch=len(batches),
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )


class _EpochSeconds(keras.callbacks.Callback):
    """``epoch_seconds`` in the epoch logs: training and validation (listed after it)."""

    def on_epoch_begin(self, epoch: int, logs=None) -> None:  # noqa: ARG002 - Keras' signature
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: ARG002 - Keras' signature
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._started


def fine_tune(config: TrainingConfig, setup: TaskSetup) -> dict[str, list[float]]:
    """ULMFiT fine-tuning: schedule, discriminative LRs, unfreezing; saves ``OUT/model.keras``."""
    model = setup.model
    steps = max(1, -(-len(setup.train_ids) // config.batch_size)) * config.num_epochs
    groups = layer_groups(model, setup.backbone)
    model.compile(
        optimizer=DiscriminativeAdam(
            learning_rate=_schedule(config.lr_scheduler, config.lr, steps),
            # fastai's betas for ULMFiT fine-tuning.
            beta_1=0.8,
            beta_2=0.99,
            lr_multipliers=discriminative_multipliers(groups),
        ),
        loss=setup.loss,
    )
    out = config.out_path
    out.mkdir(parents=True, exist_ok=True)
    # Validation first: the checkpoint reads the value it writes into the logs.
    callbacks: list[keras.callbacks.Callback] = [
        setup.validation,
        _EpochSeconds(),
        *_hub_weight_drop(config, setup),
    ]
    if config.unfreeze == "gradual":
        callbacks.append(GradualUnfreezing(groups))
    if config.save_best:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                out / MODEL_FILE, monitor=setup.monitor, mode=setup.mode, save_best_only=True
            )
        )
    fit = _fit(config, setup, callbacks)
    if not config.save_best:
        # Beside, then renamed: a crash never leaves a truncated model.keras.
        tmp = out / ("tmp-" + MODEL_FILE)
        model.save(tmp)
        os.replace(tmp, out / MODEL_FILE)
    return {k: [float(v) for v in vals] for k, vals in fit.history.items()}


def find_task_lr(
    config: TrainingConfig, setup: TaskSetup, steps: int
) -> tuple[LRFinderResult, Path]:
    """Run ``steps`` of the LR finder on a task model; save ``OUT/lr_finder.png``."""
    result = find_lr(
        setup.model,
        setup.train_ids,
        setup.train_targets,
        setup.loss,
        steps=steps,
        batch_size=config.batch_size,
        seed=config.seed,
        callbacks=_hub_weight_drop(config, setup),
    )
    config.out_path.mkdir(parents=True, exist_ok=True)
    return result, plot_lr_finder(result, config.out_path / "lr_finder.png")


def write_task(config: TrainingConfig, setup: TaskSetup, task: dict[str, Any]) -> None:
    """``OUT/spm.model`` and ``OUT/task.json``: what a predictor needs besides the model."""
    task = {
        **task,
        "max_seq_len": config.max_seq_len,
        "fixed_seq_len": config.fixed_seq_len,
        "model_type": config.model_type,
        "export_dir": str(setup.export_dir),
    }
    write_task_files(config.out_path, setup.spm_path, task)
