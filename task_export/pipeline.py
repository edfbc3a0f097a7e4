"""Stage 13: a trained task directory -> the export directory, every artifact proven at export.

:func:`export_task` writes into a temporary sibling of ``out_path`` and renames it into place
only when every float artifact matched the Keras model (max |diff| <= ``FLOAT_TOLERANCE`` on
probabilities or scores, identical labels) and int8 agreed on >= ``INT8_AGREEMENT`` of the
labels: a failed export leaves nothing behind (a tagger's checks, word by word:
:mod:`task_export.tagger_parity`). Layout: :mod:`task_export.layout`.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from task_export.convert import write_saved_model, write_tflite
from task_export.graph import TaskGraph
from task_export.layout import (
    FORMATS,
    INT8_FORMATS,
    LABELS_FILE,
    ONNX_FILE,
    ONNX_INT8_FILE,
    ONNX_TEXT_FILE,
    REPORT_FILE,
    SAVED_MODEL_DIR,
    SPM_FILE,
    TFLITE_FILE,
    TFLITE_INT8_FILE,
)
from task_export.onnx_export import write_onnx, write_onnx_int8
from task_export.onnx_text import write_onnx_text
from task_export.parity import check_artifact, probe_texts
from task_export.tagger_parity import check_tagger_artifact
from task_export.tagging import split_words
from ulmfit_core.artifacts import library_versions, write_json
from ulmfit_core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["ExportResult", "example_predictions", "export_task", "summary_line"]

ARTIFACT_FILES = {
    "saved_model": SAVED_MODEL_DIR,
    "tflite": TFLITE_FILE,
    "tflite_int8": TFLITE_INT8_FILE,
    "onnx": ONNX_FILE,
    "onnx_int8": ONNX_INT8_FILE,
    "onnx_text": ONNX_TEXT_FILE,
}


@dataclass(frozen=True)
class ExportResult:
    out_path: Path
    report: dict[str, Any]
    seconds: float


def export_task(
    task_dir: Path,
    out_path: Path,
    formats: tuple[str, ...] = FORMATS,
    tflite_seq_len: int | None = None,
    allow_flex: bool = False,
    texts: list[str] | None = None,
    golds: list[str] | list[list[str]] | None = None,
) -> ExportResult:
    """Export ``task_dir`` to ``out_path`` (replaced if it exists); see the module docstring.

    Args:
        formats: a subset of :data:`~task_export.layout.FORMATS`.
        tflite_seq_len: the most tokens TFLite reads of a text (default: the task's max_seq_len).
        allow_flex: write TFLite files that need Select-TF ops instead of failing.
        texts, golds: validation texts (and their gold labels or values; a tagger's: one tag
            name per word) for the parity checks and the accuracy report; a few fixed probe
            texts are always added.
    """
    start = time.perf_counter()
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise InputError(f"--formats: unknown {', '.join(unknown) or 'none given'}; use {FORMATS}")
    graph = TaskGraph.load(task_dir)
    formats = _formats_for(graph, formats)
    seq_len = tflite_seq_len or graph.max_len
    if seq_len < 3:
        raise InputError(f"--tflite-seq-len must be at least 3 (BOS, a token, EOS), got {seq_len}")
    all_texts = [*(texts or []), *probe_texts(seq_len)]
    tmp = out_path.with_name(out_path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        report = _write_all(graph, tmp, formats, seq_len, allow_flex, all_texts, golds)
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_json(tmp / REPORT_FILE, report)
        if out_path.exists():
            shutil.rmtree(out_path)
        tmp.rename(out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out_path, report, time.perf_counter() - start)


def _formats_for(graph: TaskGraph, formats: tuple[str, ...]) -> tuple[str, ...]:
    """``formats`` in writing order (``onnx_text`` is built from ``model.onnx``)."""
    if graph.kind == "tagger" and "onnx_text" in formats:
        if formats != FORMATS:
            raise InputError(
                "--formats onnx_text: a tagger's ONNX takes ids (its words are split before "
                "SentencePiece); drop onnx_text"
            )
        formats = tuple(fmt for fmt in formats if fmt != "onnx_text")
    for derived in ("onnx_int8", "onnx_text"):
        if derived in formats and "onnx" not in formats:
            raise InputError(f"--formats {derived} is built from model.onnx: add onnx to --formats")
    return tuple(fmt for fmt in FORMATS if fmt in formats)


def _write_all(graph, tmp, formats, seq_len, allow_flex, texts, golds) -> dict:
    shutil.copyfile(graph.task_dir / SPM_FILE, tmp / SPM_FILE)
    labels = graph.labels
    (tmp / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    report: dict[str, Any] = {
        "task": graph.kind,
        "head": graph.task.get("head"),
        "labels": labels,
        "max_seq_len": graph.max_len,
        "seq_len": seq_len,
        "outputs": list(graph.output_names),
        "source": str(graph.task_dir),
        "parity_texts": len(texts),
        "artifacts": {},
        "versions": library_versions(),
    }
    tflite_module = None
    for fmt in formats:
        path = tmp / ARTIFACT_FILES[fmt]
        entry: dict[str, Any] = {"file": ARTIFACT_FILES[fmt]}
        logger.info("writing %s", path.name)
        if fmt == "saved_model":
            write_saved_model(graph, path)
        elif fmt == "onnx":  # any length: the recurrence runs only as far as the batch is long
            entry |= write_onnx(graph, path, seq_len)
        elif fmt == "onnx_int8":
            entry |= write_onnx_int8(tmp / ONNX_FILE, path)
        elif fmt == "onnx_text":
            entry |= write_onnx_text(graph, tmp / ONNX_FILE, path)
        else:
            tflite_module = tflite_module or graph.tflite_module(seq_len)
            entry["ops"] = write_tflite(tflite_module, path, fmt == "tflite_int8", allow_flex)
        entry["bytes"] = _size(path)
        check = check_tagger_artifact if graph.kind == "tagger" else check_artifact
        entry["parity"] = check(graph, fmt, path, texts, golds, seq_len)
        report["artifacts"][fmt] = entry
    return report


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def summary_line(result: ExportResult) -> str:
    """``saved_model 1.2 MB (max |diff| 3e-07), tflite ... -> OUT in 12.3 s``."""
    parts = []
    for fmt, entry in result.report["artifacts"].items():
        parity = entry["parity"]
        agreement = parity.get("label_agreement", parity.get("tag_agreement"))
        figure = (
            f"{'tag' if 'tag_agreement' in parity else 'label'} agreement {agreement:.1%}"
            if fmt in INT8_FORMATS and agreement is not None
            else f"max |diff| {parity['max_abs_diff']:.1e}"
        )
        parts.append(f"{fmt} {entry['bytes'] / 1e6:.2f} MB ({figure})")
    return f"{', '.join(parts)} -> {result.out_path} in {result.seconds:.1f} s"


def example_predictions(result: ExportResult, text: str) -> list[str]:
    """One line per strings-in artifact written: its prediction for ``text``."""
    from task_export.runtimes import load_saved_model, load_tflite

    loaders = {"saved_model": load_saved_model, "tflite": load_tflite, "tflite_int8": load_tflite}
    lines = []
    for fmt, entry in result.report["artifacts"].items():
        if fmt not in loaders:
            continue
        out = loaders[fmt](result.out_path / entry["file"])(text=np.asarray([text], dtype=object))
        if "tags" in out:  # a tagger: word/TAG, as stage 12 prints them
            tags = [t.decode() if isinstance(t, bytes) else str(t) for t in out["tags"][0]]
            answer = " ".join(f"{w}/{t}" for w, t in zip(split_words(text), tags, strict=False))
        elif "label" in out:
            label = out["label"][0]
            label = label.decode() if isinstance(label, bytes) else str(label)
            answer = f"{label} ({float(np.max(out['probabilities'][0])):.4f})"
        else:
            answer = f"score {float(out['score'][0]):.4f}"
        diff = entry["parity"]["max_abs_diff"]
        lines.append(f"{fmt}: {text!r} -> {answer}; max |diff| vs Keras {diff:.1e}")
    return lines
