"""Reload a trained task directory and predict on raw text: classifier, regressor, tagger.

Also what is drawn from a classifier's predictions: :func:`render_attention` (the attention
heatmaps) and :func:`describe_predictions` (the lines ``--interactive`` prints).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece

from ulmfit_core.ids import PAD_ID
from ulmfit_keras import LabelNormalizer
from ulmfit_keras.word_alignment import word_predictions
from ulmfit_tasks.data import encode_texts
from ulmfit_tasks.rendering import top_tokens, write_attention_html, write_attention_png
from ulmfit_tasks.tagger import encode_sentences
from ulmfit_tasks.task_dir import SPM_FILE, load_task_model, read_task

logger = logging.getLogger(__name__)

__all__ = [
    "ATTENTION_EXAMPLES",
    "TaggerPredictor",
    "TextClassifierPredictor",
    "TextRegressorPredictor",
    "describe_predictions",
    "render_attention",
]

ATTENTION_EXAMPLES = 5


class TextClassifierPredictor:
    """Reload a trained classifier directory and predict on raw texts."""

    def __init__(self, out_path: str | os.PathLike) -> None:
        out = Path(out_path)
        self.out_path = out
        self.task: dict[str, Any] = read_task(out, "classifier")
        self.labels: list[str] = self.task["labels"]
        self.model = load_task_model(out, self.task)
        self.spm = sentencepiece.SentencePieceProcessor(model_file=str(out / SPM_FILE))

    @property
    def is_attention(self) -> bool:
        return self.task["head"] == "attention"

    def encode(self, texts: list[str]) -> np.ndarray:
        return encode_texts(
            self.spm.encode, texts, self.task["max_seq_len"], self.task["fixed_seq_len"]
        ).ids

    def predict(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """``(probabilities (n, classes), attention weights (n, seq) or None, ids (n, seq))``."""
        ids = self.encode(texts)
        outputs = self.model.predict(ids, verbose=0)
        if isinstance(outputs, dict):
            return outputs["predictions"], outputs["attention_weights"], ids
        return outputs, None, ids

    def pieces(self, ids: np.ndarray) -> list[str]:
        """Subword strings of one row of ids, padding dropped."""
        return [self.spm.id_to_piece(int(i)) for i in ids if int(i) != PAD_ID]


def describe_predictions(predictor: TextClassifierPredictor, texts: list[str]) -> list[str]:
    """One line per text: label probabilities (best first) and, for attention, the top tokens."""
    probs, weights, ids = predictor.predict(texts)
    lines = []
    for i, row in enumerate(probs):
        order = np.argsort(-row, kind="stable")
        line = " ".join(f"{predictor.labels[j]}={row[j]:.4f}" for j in order)
        if weights is not None:
            pieces = predictor.pieces(ids[i])
            tops = top_tokens(pieces, weights[i])
            line += " | top tokens: " + " ".join(f"{p}:{w:.3f}" for p, w in tops)
        lines.append(line)
    return lines


def render_attention(
    predictor: TextClassifierPredictor, texts: list[str], count: int = ATTENTION_EXAMPLES
) -> tuple[Path, Path]:
    """Write ``attention.html`` and ``attention.png`` for the first ``count`` texts."""
    probs, weights, ids = predictor.predict(texts[:count])
    rows = []
    for row_probs, row_weights, row_ids in zip(probs, weights, ids, strict=True):
        pieces = predictor.pieces(row_ids)
        label = predictor.labels[int(np.argmax(row_probs))]
        rows.append((pieces, row_weights[: len(pieces)], f"{label} ({row_probs.max():.2f})"))
    out = predictor.out_path
    html_path = write_attention_html(out / "attention.html", rows)
    png_path = write_attention_png(out / "attention.png", rows)
    logger.info("attention heatmap: %s", png_path)
    return html_path, png_path


class TextRegressorPredictor:
    """Reload a trained regressor directory and predict scores (in label units) on raw texts."""

    def __init__(self, out_path: str | os.PathLike) -> None:
        out = Path(out_path)
        task = read_task(out, "regressor")
        self.normalizer = LabelNormalizer.from_json(json.dumps(task["normalizer"]))
        self.max_seq_len: int = task["max_seq_len"]
        self.fixed_seq_len: int | None = task["fixed_seq_len"]
        self.model = load_task_model(out, task)
        self.spm = sentencepiece.SentencePieceProcessor(model_file=str(out / SPM_FILE))

    def predict(self, texts: list[str]) -> np.ndarray:
        """Scores ``(n,)``, the model's outputs with the label normalization undone."""
        ids = encode_texts(self.spm.encode, texts, self.max_seq_len, self.fixed_seq_len).ids
        return self.normalizer.inverse_transform(self.model.predict(ids, verbose=0)[:, 0])


class TaggerPredictor:
    """Reload a trained tagger directory and tag whitespace-separated words."""

    def __init__(self, out_path: str | os.PathLike) -> None:
        out = Path(out_path)
        self.task: dict[str, Any] = read_task(out, "tagger")
        self.tags: list[str] = self.task["tags"]
        self.model = load_task_model(out, self.task)
        self.spm = sentencepiece.SentencePieceProcessor(model_file=str(out / SPM_FILE))

    def predict(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        """One tag per word of each sentence (words cut off by ``max_seq_len`` get tag 0)."""
        ids, aligned = encode_sentences(
            self.spm, sentences, self.task["max_seq_len"], self.task["fixed_seq_len"]
        )
        token_preds = self.model.predict(ids, verbose=0).argmax(-1)
        return [
            [self.tags[t] for t in word_predictions(row, seq.word_starts)]
            for row, seq in zip(token_preds, aligned, strict=True)
        ]
