"""A run's per-epoch history: its columns, its values as floats, and its CSV file."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ulmfit_core.artifacts import atomic_file

__all__ = ["CLASSIFIER_HISTORY_COLUMNS", "HISTORY_COLUMNS", "as_float", "write_history"]

# Stage 04's columns (a language model), and stage 08's (a text classifier).
HISTORY_COLUMNS = ("epoch", "phase", "train_loss", "valid_loss", "accuracy", "perplexity", "time")
CLASSIFIER_HISTORY_COLUMNS = ("epoch", "phase", "train_loss", "valid_loss", "accuracy", "time")


def write_history(
    path: Path, history: list[dict[str, Any]], columns: Sequence[str] = HISTORY_COLUMNS
) -> None:
    """Write one CSV row per epoch, with a header of ``columns``, atomically."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(history)


def as_float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value.item() if isinstance(value, torch.Tensor) else value)
