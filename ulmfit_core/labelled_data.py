"""Labelled text examples shared by both environments: TSV files and label maps.

Stage 08 (fastai) and stages 10-11 (Keras) read their data here, so a missing column or an
unknown label gets the same message on either side. Standard library and numpy only.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulmfit_core.errors import InputError

__all__ = [
    "VALIDATION_SEED",
    "TextExamples",
    "label_indices",
    "read_label_map",
    "read_tsv",
    "split_validation",
]

VALIDATION_SEED = 42


@dataclass(frozen=True)
class TextExamples:
    """Texts with their gold values (label strings, or numbers for regression)."""

    texts: tuple[str, ...]
    golds: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


def read_label_map(path: str | os.PathLike) -> list[str]:
    """One label per line (blank lines skipped); the line order gives the class index."""
    path = Path(path)
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    labels = [label for label in labels if label]
    if not labels:
        raise InputError(f"{path}: the label map is empty (expected one label per line)")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InputError(f"{path}: duplicate labels in the label map: {', '.join(duplicates)}")
    return labels


def read_tsv(path: str | os.PathLike, data_column: str, gold_column: str) -> TextExamples:
    """Read ``data_column`` and ``gold_column`` of a tab-separated file with a header row.

    Raises:
        InputError: an empty file, a missing column (the message lists the columns found), or
            an empty text.
    """
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None:
            raise InputError(f"{path}: the file is empty (expected a header row and data)")
        found = list(reader.fieldnames)
        missing = [c for c in (data_column, gold_column) if c not in found]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(found)}"
            )
        texts, golds = [], []
        for line_number, row in enumerate(reader, start=2):
            text, gold = row[data_column], row[gold_column]
            if text is None or gold is None:
                raise InputError(f"{path}, line {line_number}: fewer fields than the header")
            texts.append(text.strip())
            golds.append(gold.strip())
    if not texts:
        raise InputError(f"{path}: the file has a header but no examples")
    return TextExamples(tuple(texts), tuple(golds))


def label_indices(examples: TextExamples, labels: Sequence[str], source: str) -> np.ndarray:
    """Class index of each gold label; labels missing from the label map raise, all named."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({gold for gold in examples.golds if gold not in index})
    if unknown:
        raise InputError(
            f"{source}: labels not in the label map: {', '.join(unknown)} "
            f"(label map: {', '.join(labels)})"
        )
    return np.asarray([index[gold] for gold in examples.golds], dtype=np.int32)


def split_validation(
    count: int, fraction: float = 0.1, seed: int = VALIDATION_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_indices, validation_indices)``: a fixed-seed shuffle, at least one of each."""
    if count < 2:
        raise InputError(f"need at least 2 examples to take a validation split, got {count}")
    order = np.random.default_rng(seed).permutation(count)
    n_valid = min(count - 1, max(1, round(count * fraction)))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])
