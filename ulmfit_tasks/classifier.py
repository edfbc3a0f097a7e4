"""The text-classifier driver behind ``scripts/10_train_classifier.py``.

:func:`train_classifier` reads the TSV data, loads the converted encoder from an export
directory, fine-tunes a head (``classic``: :class:`~ulmfit_keras.ULMFiTClassifier`;
``attention``: :class:`~ulmfit_keras.BranchingAttentionClassifier`) and writes
``OUT/model.keras`` + ``OUT/task.json`` + ``OUT/spm.model`` (with the attention head also
``OUT/attention.html`` and ``OUT/attention.png``). :func:`find_classifier_lr` runs the LR finder
instead. :class:`~ulmfit_tasks.predictors.TextClassifierPredictor` reloads the directory.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ulmfit_keras import BranchingAttentionClassifier, LRFinderResult, ULMFiTClassifier
from ulmfit_tasks.backbone import load_backbone
from ulmfit_tasks.batching import predict_sorted
from ulmfit_tasks.config import ClassifierConfig
from ulmfit_tasks.data import TextExamples, label_indices, read_label_map
from ulmfit_tasks.fine_tuning import TaskSetup, find_task_lr, fine_tune, write_task
from ulmfit_tasks.predictors import TextClassifierPredictor, render_attention
from ulmfit_tasks.tsv_task import load_examples, prepare_texts

logger = logging.getLogger(__name__)

__all__ = ["ClassifierResult", "find_classifier_lr", "train_classifier"]


@dataclass(frozen=True)
class ClassifierResult:
    """What a run produced: per-epoch history, validation accuracy (best with --save-best), the
    output dir, and the trained model as the last epoch left it."""

    history: dict[str, list[float]]
    val_accuracy: float
    out_path: Path
    truncated: int
    attention_html: Path | None = None
    attention_png: Path | None = None
    model: keras.Model | None = None


class _ValidationAccuracy(keras.callbacks.Callback):
    """Put ``val_accuracy`` into the epoch logs and log it.

    Computed from ``predict`` rather than a compiled metric, because Keras' compiled metrics
    want a target for every output of the attention model (its weights have none). Listed before
    ``ModelCheckpoint`` so that the checkpoint sees the value.
    """

    def __init__(self, ids: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.ids, self.labels, self.batch_size = ids, labels, batch_size

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        outputs = predict_sorted(self.model, self.ids, self.batch_size)
        probs = outputs["predictions"] if isinstance(outputs, dict) else outputs
        accuracy = float(np.mean(np.argmax(probs, axis=-1) == self.labels))
        if logs is not None:
            logs["val_accuracy"] = accuracy
        loss = (logs or {}).get("loss", float("nan"))
        logger.info("epoch %d: loss %.4f, validation accuracy %.4f", epoch + 1, loss, accuracy)


def _classifier_setup(config: ClassifierConfig) -> tuple[TaskSetup, list[str], TextExamples]:
    """The classifier ready to train; its labels and validation texts."""
    labels = read_label_map(config.label_map)
    train, train_y, valid, valid_y = load_examples(
        config, lambda examples, source: label_indices(examples, labels, source)
    )
    prepared = prepare_texts(config, train, valid)
    backbone = load_backbone(config, prepared.export_dir)
    if config.head == "attention":
        model: keras.Model = BranchingAttentionClassifier(
            backbone=backbone, num_classes=len(labels), seed=config.seed
        )
        # Only the predictions have a target; the attention weights are an explanation.
        loss: Any = {"predictions": "sparse_categorical_crossentropy"}
        targets: Any = {"predictions": train_y}
    else:
        model = ULMFiTClassifier(
            backbone=backbone,
            num_classes=len(labels),
            use_batch_norm=config.batch_norm,
            seed=config.seed,
            keep=config.keep,
            max_len=config.max_len,
            bptt=config.bptt,
        )
        loss, targets = "sparse_categorical_crossentropy", train_y
    setup = TaskSetup(
        export_dir=prepared.export_dir,
        spm_path=prepared.spm_path,
        backbone=backbone,
        model=model,
        train_ids=prepared.train_ids,
        train_targets=targets,
        loss=loss,
        validation=_ValidationAccuracy(prepared.valid_ids, valid_y, config.batch_size),
        monitor="val_accuracy",
        mode="max",
        truncated=prepared.truncated,
    )
    return setup, labels, valid


def find_classifier_lr(config: ClassifierConfig, steps: int) -> tuple[LRFinderResult, Path]:
    """Run ``steps`` of the LR finder on the classifier; save ``OUT/lr_finder.png``."""
    setup, _, _ = _classifier_setup(config)
    return find_task_lr(config, setup, steps)


def train_classifier(config: ClassifierConfig) -> ClassifierResult:
    """Fine-tune a classifier on ``config.train_tsv``; write the model to ``config.out_path``."""
    setup, labels, valid = _classifier_setup(config)
    history = fine_tune(config, setup)
    task = {"task": "classifier", "head": config.head, "labels": labels, "keep": config.keep}
    if config.keep == "last":
        task |= {"bptt": config.bptt, "max_len": config.max_len}
    write_task(config, setup, task)
    accuracies = history["val_accuracy"]
    result = ClassifierResult(
        history,
        max(accuracies) if config.save_best else accuracies[-1],
        config.out_path,
        setup.truncated,
        model=setup.model,
    )
    if config.head == "attention":
        predictor = TextClassifierPredictor(config.out_path)
        html_path, png_path = render_attention(predictor, list(valid.texts))
        result = dataclasses.replace(result, attention_html=html_path, attention_png=png_path)
    return result
