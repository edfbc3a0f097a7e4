"""The text-regressor driver behind ``scripts/11_train_regressor.py``.

:func:`train_regressor` fine-tunes a :class:`~ulmfit_keras.ULMFiTRegressor` (one score per
text) like the classifier, on targets standardized by a :class:`~ulmfit_keras.LabelNormalizer`
with ``--normalize-labels`` (the identity otherwise), and writes the task directory with the
normalization in ``task.json``. :class:`~ulmfit_tasks.predictors.TextRegressorPredictor`
reloads it and undoes the normalization.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ulmfit_keras import LabelNormalizer, LRFinderResult, ULMFiTRegressor
from ulmfit_tasks.backbone import load_backbone
from ulmfit_tasks.batching import predict_sorted
from ulmfit_tasks.config import LOSSES, RegressorConfig
from ulmfit_tasks.data import float_targets
from ulmfit_tasks.fine_tuning import TaskSetup, find_task_lr, fine_tune, write_task
from ulmfit_tasks.tsv_task import load_examples, prepare_texts

logger = logging.getLogger(__name__)

__all__ = ["RegressorResult", "find_regressor_lr", "train_regressor"]


@dataclass(frozen=True)
class RegressorResult:
    """What a regressor run produced: history, validation MAE (best with --save-best, in label
    units), the output dir, and the trained model as the last epoch left it."""

    history: dict[str, list[float]]
    val_mae: float
    out_path: Path
    truncated: int
    model: keras.Model | None = None


class _ValidationError(keras.callbacks.Callback):
    """Put ``val_mae`` (in label units: predictions inverse-transformed) into the epoch logs."""

    def __init__(
        self, ids: np.ndarray, targets: np.ndarray, normalizer: LabelNormalizer, batch_size: int
    ) -> None:
        super().__init__()
        self.ids, self.targets, self.normalizer = ids, targets, normalizer
        self.batch_size = batch_size

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        raw = predict_sorted(self.model, self.ids, self.batch_size)[:, 0]
        mae = float(np.mean(np.abs(self.normalizer.inverse_transform(raw) - self.targets)))
        if logs is not None:
            logs["val_mae"] = mae
        loss = (logs or {}).get("loss", float("nan"))
        logger.info("epoch %d: loss %.4f, validation MAE %.4f", epoch + 1, loss, mae)


def _regressor_setup(config: RegressorConfig) -> tuple[TaskSetup, LabelNormalizer]:
    """The regressor ready to train, and the label normalizer its predictions undo."""
    train, train_y, valid, valid_y = load_examples(config, float_targets)
    # Identity unless asked: the predictor always applies the inverse transform.
    normalizer = LabelNormalizer.fit(train_y) if config.normalize_labels else LabelNormalizer()
    prepared = prepare_texts(config, train, valid)
    backbone = load_backbone(config, prepared.export_dir)
    setup = TaskSetup(
        export_dir=prepared.export_dir,
        spm_path=prepared.spm_path,
        backbone=backbone,
        model=ULMFiTRegressor(
            backbone=backbone, use_batch_norm=config.batch_norm, seed=config.seed
        ),
        train_ids=prepared.train_ids,
        train_targets=normalizer.transform(train_y)[:, None],
        loss=LOSSES[config.loss_fn],
        validation=_ValidationError(prepared.valid_ids, valid_y, normalizer, config.batch_size),
        monitor="val_mae",
        mode="min",
        truncated=prepared.truncated,
    )
    return setup, normalizer


def find_regressor_lr(config: RegressorConfig, steps: int) -> tuple[LRFinderResult, Path]:
    """Run ``steps`` of the LR finder on the regressor; save ``OUT/lr_finder.png``."""
    setup, _ = _regressor_setup(config)
    return find_task_lr(config, setup, steps)


def train_regressor(config: RegressorConfig) -> RegressorResult:
    """Fine-tune a regressor on ``config.train_tsv``; write the model to ``config.out_path``."""
    setup, normalizer = _regressor_setup(config)
    history = fine_tune(config, setup)
    write_task(config, setup, {"task": "regressor", "normalizer": json.loads(normalizer.to_json())})
    errors = history["val_mae"]
    return RegressorResult(
        history,
        min(errors) if config.save_best else errors[-1],
        config.out_path,
        setup.truncated,
        model=setup.model,
    )
