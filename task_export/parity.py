"""Parity at export: every artifact, run by its own runtime, against the Keras model.

The reference is the task directory's Keras model on ids from SentencePiece's own encoder
(``ulmfit_tasks.data.encode_texts``, as stages 10/11 predict). Float artifacts must match it
within :data:`FLOAT_TOLERANCE` on probabilities / scores (and attention weights), give the same
labels and the same subword pieces; int8 must agree on :data:`INT8_AGREEMENT` of the labels
(its accuracy, or MAE for a regressor, is reported beside the float model's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece

from task_export.graph import TaskGraph
from task_export.isolated import run_onnx_text
from task_export.layout import INT8_FORMATS, ONNX_FILE
from task_export.runtimes import load_onnx, load_saved_model, load_tflite, onnx_seq_len
from ulmfit_core.errors import InputError
from ulmfit_core.ids import PAD_ID
from ulmfit_tasks.data import encode_texts

__all__ = ["FLOAT_TOLERANCE", "INT8_AGREEMENT", "ParityError", "check_artifact", "probe_texts"]

FLOAT_TOLERANCE = 1e-5
INT8_AGREEMENT = 0.99
CHUNK = 32  # texts per comparison call


class ParityError(InputError):
    """An exported artifact does not compute what the Keras model computes."""


def probe_texts(seq_len: int) -> list[str]:
    """Texts every export is checked on besides the validation texts: empty-ish, one word,
    punctuation, non-ASCII, and one far longer than ``seq_len`` (so the cut is checked)."""
    long_text = " ".join(["the film is long and slow , but it is worth seeing ."] * seq_len)
    return ["", " ", "a", "!!! ???", "zażółć gęślą jaźń 123", "Great!", long_text]


def keras_reference(graph: TaskGraph, texts: list[str], length: int) -> dict[str, np.ndarray]:
    """The Keras model's outputs on ``texts`` cut to ``length`` ids: ``ids`` and the numeric
    outputs (``probabilities`` [+ ``token_weights``] or ``score``)."""
    spm = sentencepiece.SentencePieceProcessor(model_proto=graph.spm_bytes)
    ids = encode_texts(spm.encode, texts, length, graph.task.get("fixed_seq_len")).ids
    out = graph.model.predict(ids, verbose=0)
    if graph.kind == "regressor":
        normalizer = graph.task["normalizer"]
        return {"ids": ids, "score": out[:, 0] * normalizer["std"] + normalizer["mean"]}
    if isinstance(out, dict):
        return {
            "ids": ids,
            "probabilities": out["predictions"],
            "token_weights": out["attention_weights"],
        }
    return {"ids": ids, "probabilities": out}


def run_artifact(fmt: str, path, texts: list[str], ids: np.ndarray) -> dict:
    """The artifact's numeric (and, strings-in, string) outputs on ``texts``."""
    if fmt == "saved_model":
        return load_saved_model(path)(text=np.asarray(texts, dtype=object))
    if fmt in ("onnx", "onnx_int8"):
        return load_onnx(path)(token_ids=ids, mask=(ids != PAD_ID).astype(np.int32))
    if fmt == "onnx_text":
        return run_onnx_text(path, texts)
    return load_tflite(path)(text=np.asarray(texts, dtype=object))


def check_artifact(
    graph: TaskGraph,
    fmt: str,
    path,
    texts: list[str],
    golds: list[str] | None,
    seq_len: int,
) -> dict[str, Any]:
    """Run and compare one artifact; returns its figures for ``report.json``.

    Raises:
        ParityError: a float artifact off by more than the tolerance, other labels or pieces,
            or int8 labels agreeing on fewer than ``INT8_AGREEMENT`` of the texts.
    """
    if fmt.startswith("tflite"):
        length = min(graph.max_len, seq_len)
    else:  # a QRNN's ONNX has a fixed length (task_export.onnx_export)
        fixed = onnx_seq_len(Path(path).with_name(ONNX_FILE)) if fmt.startswith("onnx") else None
        length = min(graph.max_len, fixed or graph.max_len)
    key = "score" if graph.kind == "regressor" else "probabilities"
    figures: dict[str, Any] = {"texts": len(texts), "max_abs_diff": 0.0}
    ours_all, theirs_all = np.zeros((len(texts),)), np.zeros((len(texts),))
    # Length-sorted chunks: a long text pads only its own chunk (memory stays bounded).
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), CHUNK):
        rows = order[start : start + CHUNK]
        chunk = [texts[i] for i in rows]
        reference = keras_reference(graph, chunk, length)
        out = run_artifact(fmt, path, chunk, reference["ids"])
        diff = float(np.max(np.abs(out[key] - reference[key])))
        figures["max_abs_diff"] = max(figures["max_abs_diff"], diff)
        if "token_weights" in reference:
            width = reference["ids"].shape[1]
            weights = np.asarray(out["token_weights"])
            tw_diff = max(
                np.max(np.abs(weights[:, :width] - reference["token_weights"])),
                np.max(np.abs(weights[:, width:]), initial=0.0),
            )
            figures["token_weights_max_abs_diff"] = float(
                max(figures.get("token_weights_max_abs_diff", 0.0), tw_diff)
            )
        if "tokens" in out:
            same = _same_pieces(graph, out["tokens"], reference["ids"])
            figures["tokens_identical"] = figures.get("tokens_identical", True) and same
        if graph.kind == "classifier":
            ours_all[rows] = np.argmax(out[key], axis=-1)
            theirs_all[rows] = np.argmax(reference[key], axis=-1)
        else:
            ours_all[rows], theirs_all[rows] = out[key], reference[key]
    if graph.kind == "classifier":
        figures["label_agreement"] = float(np.mean(ours_all == theirs_all))
        if golds:
            gold = np.asarray([graph.task["labels"].index(g) for g in golds])
            n = len(gold)
            figures["accuracy"] = float(np.mean(ours_all[:n] == gold))
            figures["keras_accuracy"] = float(np.mean(theirs_all[:n] == gold))
    elif golds:
        gold = np.asarray([float(g) for g in golds])
        figures["mae"] = float(np.mean(np.abs(ours_all[: len(gold)] - gold)))
        figures["keras_mae"] = float(np.mean(np.abs(theirs_all[: len(gold)] - gold)))
    _judge(fmt, figures)
    return figures


def _same_pieces(graph: TaskGraph, tokens: np.ndarray, ids: np.ndarray) -> bool:
    for row_tokens, row_ids in zip(tokens, ids, strict=True):
        found = [t.decode() if isinstance(t, bytes) else str(t) for t in row_tokens]
        found = [t for t in found if t]
        expected = [graph.pieces[i] for i in row_ids if i != PAD_ID]
        if found != expected:
            return False
    return True


def _judge(fmt: str, figures: dict[str, Any]) -> None:
    if fmt in INT8_FORMATS:
        agreement = figures.get("label_agreement")
        if agreement is not None and agreement < INT8_AGREEMENT:
            raise ParityError(
                f"{fmt} agrees with the Keras model on only {agreement:.1%} of the labels "
                f"(need {INT8_AGREEMENT:.0%}); export without {fmt} (--formats)"
            )
        return
    bad = []
    if figures["max_abs_diff"] > FLOAT_TOLERANCE:
        bad.append(f"max |diff| {figures['max_abs_diff']:.2e} > {FLOAT_TOLERANCE}")
    if figures.get("token_weights_max_abs_diff", 0.0) > FLOAT_TOLERANCE:
        bad.append(f"token weights off by {figures['token_weights_max_abs_diff']:.2e}")
    if figures.get("label_agreement", 1.0) < 1.0:
        bad.append(f"labels agree on {figures['label_agreement']:.1%}")
    if figures.get("tokens_identical") is False:
        bad.append("the in-graph tokenizer's pieces differ from SentencePiece's")
    if bad:
        raise ParityError(f"{fmt} does not match the Keras model: {'; '.join(bad)}")
