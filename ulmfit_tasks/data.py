"""Labelled data for the downstream task CLIs: TSV files, label maps, tagger JSONL, id padding.

Every reader raises :class:`~ulmfit_core.errors.InputError` with a message that names the
file and what is wrong (the columns found, the unknown labels, the bad line number), so a CLI can
report it in one line and exit non-zero.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulmfit_core.errors import InputError
from ulmfit_core.ids import BOS_ID, EOS_ID
from ulmfit_core.labelled_data import (
    TextExamples,
    label_indices,
    read_label_map,
    read_tsv,
    split_validation,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EncodedTexts",
    "TextExamples",
    "encode_texts",
    "float_targets",
    "label_indices",
    "read_label_map",
    "read_tagger_jsonl",
    "read_tagger_label_map",
    "read_tsv",
    "split_validation",
]


def float_targets(examples: TextExamples, source: str) -> np.ndarray:
    """Regression targets as float32; a non-numeric gold value raises with its row."""
    values = []
    for row, gold in enumerate(examples.golds, start=2):
        try:
            values.append(float(gold))
        except ValueError:
            raise InputError(f"{source}, line {row}: gold value {gold!r} is not a number") from None
    result = np.asarray(values, dtype=np.float32)
    if not np.all(np.isfinite(result)):
        raise InputError(f"{source}: gold values must be finite numbers")
    return result


def read_tagger_label_map(path: str | os.PathLike) -> list[str]:
    """A JSON object ``{"0": "O", "1": "B-LOC", ...}`` -> tag names by index (0..n-1, no gaps)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: the tagger label map is not valid JSON ({err})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f'{path}: the tagger label map must be a JSON object {{"0": "O", ...}}')
    try:
        by_index = {int(key): str(value) for key, value in data.items()}
    except ValueError:
        raise InputError(f"{path}: label map keys must be integers, got {sorted(data)}") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise InputError(f"{path}: label map keys must be 0..{len(by_index) - 1} without gaps")
    return [by_index[i] for i in range(len(by_index))]


def read_tagger_jsonl(
    path: str | os.PathLike, num_labels: int
) -> list[tuple[list[str], list[int]]]:
    """Sentences of ``[[word, tag_id], ...]`` lines -> ``[(words, tags), ...]``.

    Raises:
        InputError: an empty file, a line that is not a JSON list of ``[word, tag]`` pairs (with
            its line number), or a tag id outside the label map.
    """
    path = Path(path)
    sentences: list[tuple[list[str], list[int]]] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {line_number}"
            try:
                pairs = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{where}: not valid JSON") from None
            if not isinstance(pairs, list) or not pairs or not all(_is_pair(p) for p in pairs):
                raise InputError(f"{where}: expected a non-empty list of [word, tag] pairs")
            tags = [int(tag) for _, tag in pairs]
            bad = sorted({tag for tag in tags if not 0 <= tag < num_labels})
            if bad:
                raise InputError(
                    f"{where}: tag ids not in the label map (0..{num_labels - 1}): {bad}"
                )
            sentences.append(([str(word) for word, _ in pairs], tags))
    if not sentences:
        raise InputError(f"{path}: the file is empty (expected one JSON sentence per line)")
    return sentences


def _is_pair(item: object) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and not isinstance(item[1], bool)
    )


@dataclass(frozen=True)
class EncodedTexts:
    """Post-padded ids ``(n, seq_len)`` and how many texts were cut to ``max_seq_len``."""

    ids: np.ndarray
    truncated: int


def encode_texts(
    encode: Callable[[list[str]], list[list[int]]],
    texts: Sequence[str],
    max_seq_len: int,
    fixed_seq_len: int | None = None,
    pad_id: int = 1,
) -> EncodedTexts:
    """``<s> pieces </s>`` per text, cut to ``max_seq_len`` ids and post-padded with ``pad_id``.

    The padded length is ``fixed_seq_len`` when given, else the longest (cut) sequence, so memory
    is bounded by ``max_seq_len`` whatever the input. Truncations are counted and logged.
    """
    if max_seq_len < 3:
        raise InputError(f"--max-seq-len must be at least 3 (BOS, a token, EOS), got {max_seq_len}")
    limit = max_seq_len if fixed_seq_len is None else min(max_seq_len, fixed_seq_len)
    rows, truncated = [], 0
    for pieces in encode(list(texts)):
        row = [BOS_ID, *pieces, EOS_ID]
        if len(row) > limit:
            truncated += 1
            row = row[:limit]  # keep the start of the text (and its BOS), as SPMNumericalizer
        rows.append(row)
    if truncated:
        logger.warning("%d of %d sequences truncated to %d tokens", truncated, len(rows), limit)
    width = fixed_seq_len or max((len(row) for row in rows), default=1)
    ids = np.full((len(rows), width), pad_id, dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return EncodedTexts(ids, truncated)
