"""A stage-13 export directory, loaded for serving: its report and its SavedModel's signature.

The server never needs the training code: ``report.json`` says what the model is (task, head,
labels) and ``serving_default`` takes raw strings, tokenizer included. This module checks the
directory against that contract once, at load (a clear :class:`InputError` beats a 500 on the
first request), and turns the signature's padded tensors into plain JSON-ready dicts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the SentencePiece op the SavedModel runs

from task_export.layout import (
    LABELS_FILE,
    REPORT_FILE,
    SAVED_MODEL_DIR,
    SERVING_SIGNATURE,
    TASKS,
    TEXT_INPUT,
)
from task_export.tagging import split_words
from ulmfit_core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["HEADS", "REQUIRED_OUTPUTS", "ExportReport", "ExportedModel"]

HEADS = ("concat", "attention")
# What serving_default must return for each task (task_export/layout.py's table).
REQUIRED_OUTPUTS = {
    "classifier": ("probabilities", "label", "tokens"),
    "regressor": ("score", "tokens"),
    "tagger": ("tags", "subword_tags", "tokens"),
}
WEIGHTS_OUTPUT = "token_weights"
# Run once at load: traces the graph and checks the outputs, so the first request is not slow.
WARM_UP_TEXT = "warm up"


@dataclass(frozen=True)
class ExportReport:
    """The part of ``report.json`` the server uses.

    Args:
        task: one of ``task_export.layout.TASKS``.
        labels: class names (classifier) or tag names (tagger); empty for a regressor.
        head: ``"concat"`` or ``"attention"`` for a classifier, else ``None``.
        seq_len: the model's sequence length ``T``, if the report gives it.
    """

    task: str
    labels: tuple[str, ...]
    head: str | None = None
    seq_len: int | None = None

    @classmethod
    def read(cls, export_dir: Path) -> ExportReport:
        """Parse ``EXPORT/report.json`` (labels from ``labels.txt`` if the report has none)."""
        path = export_dir / REPORT_FILE
        if not path.is_file():
            raise InputError(f"{path} not found: is {export_dir} a stage-13 export directory?")
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(report, dict):
            raise InputError(f"{path} must hold a JSON object, not {type(report).__name__}")
        task = report.get("task")
        if task not in TASKS:
            raise InputError(f"{path}: unknown task {task!r}; expected one of {', '.join(TASKS)}")
        head = report.get("head") if task == "classifier" else None
        if task == "classifier" and head not in HEADS:
            raise InputError(f"{path}: unknown head {head!r}; expected one of {', '.join(HEADS)}")
        labels = _read_labels(export_dir, report.get("labels"))
        if task != "regressor" and not labels:
            raise InputError(
                f'{path}: a {task} export needs its labels ("labels" or {LABELS_FILE})'
            )
        seq_len = report.get("seq_len")
        if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 1):
            raise InputError(f'{path}: "seq_len" must be a positive integer, not {seq_len!r}')
        return cls(task=task, labels=labels, head=head, seq_len=seq_len)


def _read_labels(export_dir: Path, from_report: Any) -> tuple[str, ...]:
    """The report's labels, checked against ``labels.txt`` when both exist."""
    path = export_dir / LABELS_FILE
    from_file = None
    if path.is_file():
        from_file = tuple(line for line in path.read_text(encoding="utf-8").splitlines() if line)
    if from_report is None:
        return from_file or ()
    if not isinstance(from_report, list) or not all(isinstance(x, str) for x in from_report):
        raise InputError(f'{export_dir / REPORT_FILE}: "labels" must be a list of strings')
    labels = tuple(from_report)
    if from_file is not None and from_file != labels:
        raise InputError(
            f"{export_dir}: {REPORT_FILE} and {LABELS_FILE} list different labels "
            f"({list(labels)} vs {list(from_file)}); re-export the task"
        )
    return labels


class ExportedModel:
    """``serving_default`` of an export, with the report that says how to read its outputs.

    Thread-safety: :meth:`predict` may be called from any one thread at a time (the batcher's
    worker); TensorFlow itself parallelises inside the call.
    """

    def __init__(
        self,
        export_dir: Path,
        report: ExportReport,
        signature: Callable[..., dict[str, tf.Tensor]],
    ) -> None:
        self.export_dir = export_dir
        self.report = report
        self._signature = signature
        self._has_weights = WEIGHTS_OUTPUT in signature.structured_outputs
        self._rows = {
            "classifier": self._classifier_rows,
            "regressor": self._regressor_rows,
            "tagger": self._tagger_rows,
        }[report.task]

    @classmethod
    def load(cls, export_dir: str | os.PathLike) -> ExportedModel:
        """Read ``EXPORT/report.json`` and ``EXPORT/saved_model``, check them, warm up.

        Raises:
            InputError: the directory or a file is missing, the task is unknown, or the
                signature does not return what the task needs.
        """
        export_dir = Path(export_dir)
        if not export_dir.is_dir():
            raise InputError(f"export directory {export_dir} not found (stage 13 writes it)")
        report = ExportReport.read(export_dir)
        saved_model = export_dir / SAVED_MODEL_DIR
        if not (saved_model / "saved_model.pb").is_file():
            raise InputError(f"{saved_model} is not a SavedModel (no saved_model.pb in it)")
        started = time.perf_counter()
        signatures = tf.saved_model.load(str(saved_model)).signatures
        if SERVING_SIGNATURE not in signatures:
            raise InputError(
                f"{saved_model} has no signature {SERVING_SIGNATURE!r} "
                f"(it has: {', '.join(signatures) or 'none'})"
            )
        signature = signatures[SERVING_SIGNATURE]
        _check_signature(saved_model, report, signature)
        model = cls(export_dir, report, signature)
        model._warm_up()
        logger.info(
            "loaded %s%s export %s in %.1f s (%d labels)",
            report.task,
            f" ({report.head} head)" if report.head else "",
            export_dir,
            time.perf_counter() - started,
            len(report.labels),
        )
        return model

    @property
    def task(self) -> str:
        return self.report.task

    @property
    def labels(self) -> list[str]:
        return list(self.report.labels)

    def info(self) -> dict[str, Any]:
        """What the health check and the page show about the model."""
        return {
            "task": self.report.task,
            "head": self.report.head,
            "labels": self.labels,
            "seq_len": self.report.seq_len,
            "token_weights": self._has_weights,
            "export_dir": str(self.export_dir),
        }

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One JSON-ready dict per text, padding (``""``) stripped, floats as plain floats.

        * classifier: ``{"label", "probabilities": {label: p}, "tokens"}``, plus
          ``"token_weights"`` (one per token) when the model returns them (attention head);
        * regressor: ``{"score", "tokens"}``;
        * tagger: ``{"words", "tags": one per word, "tokens", "subword_tags"}``, the words split
          as the exported graph splits them (:func:`task_export.tagging.split_words`).
        """
        if not texts:
            return []
        return self._rows(list(texts), self._run(texts))

    def _run(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        outputs = self._signature(**{TEXT_INPUT: tf.constant(list(texts), dtype=tf.string)})
        return {name: value.numpy() for name, value in outputs.items()}

    def _warm_up(self) -> None:
        outputs = self._run([WARM_UP_TEXT])
        if self.task == "classifier":
            width = outputs["probabilities"].shape[-1]
            if width != len(self.labels):
                raise InputError(
                    f"{self.export_dir}: the model gives {width} probabilities for "
                    f"{len(self.labels)} labels; re-export the task"
                )
        self._rows([WARM_UP_TEXT], outputs)

    def _classifier_rows(self, texts: list[str], out: dict[str, np.ndarray]) -> list[dict]:
        rows = []
        for i in range(len(texts)):
            tokens = _strings(out["tokens"][i])
            row = {
                "label": _string(out["label"][i]),
                "probabilities": dict(
                    zip(self.report.labels, map(float, out["probabilities"][i]), strict=True)
                ),
                "tokens": [token for token in tokens if token],
            }
            if self._has_weights:
                weights = out[WEIGHTS_OUTPUT][i]
                row["token_weights"] = [
                    float(w) for token, w in zip(tokens, weights, strict=True) if token
                ]
            rows.append(row)
        return rows

    def _regressor_rows(self, texts: list[str], out: dict[str, np.ndarray]) -> list[dict]:
        scores = np.reshape(out["score"], (len(texts),))
        return [
            {"score": float(scores[i]), "tokens": [t for t in _strings(out["tokens"][i]) if t]}
            for i in range(len(texts))
        ]

    def _tagger_rows(self, texts: list[str], out: dict[str, np.ndarray]) -> list[dict]:
        rows = []
        for i, text in enumerate(texts):
            words = split_words(text)
            tokens = _strings(out["tokens"][i])
            subword_tags = _strings(out["subword_tags"][i])
            rows.append(
                {
                    "words": words,
                    "tags": _strings(out["tags"][i])[: len(words)],
                    "tokens": [token for token in tokens if token],
                    "subword_tags": [
                        tag for token, tag in zip(tokens, subword_tags, strict=True) if token
                    ],
                }
            )
        return rows


def _check_signature(saved_model: Path, report: ExportReport, signature) -> None:
    """The signature takes ``text`` and returns what ``report.task`` needs."""
    _, inputs = signature.structured_input_signature
    if TEXT_INPUT not in inputs:
        raise InputError(
            f"{saved_model}: {SERVING_SIGNATURE} takes {', '.join(inputs)}, not {TEXT_INPUT!r}"
        )
    required = list(REQUIRED_OUTPUTS[report.task])
    if report.head == "attention":
        required.append(WEIGHTS_OUTPUT)
    missing = [name for name in required if name not in signature.structured_outputs]
    if missing:
        raise InputError(
            f"{saved_model}: {SERVING_SIGNATURE} lacks output(s) {', '.join(missing)}, which a "
            f"{report.task}{f' ({report.head} head)' if report.head else ''} export returns; "
            f"it returns {', '.join(sorted(signature.structured_outputs))}"
        )


def _string(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _strings(values: np.ndarray) -> list[str]:
    return [_string(value) for value in values]
