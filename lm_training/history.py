"""A run's per-epoch history: its columns, its values as floats, and its CSV file."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import torch

from ulmfit_core.artifacts import atomic_file

__all__ = ["HISTORY_COLUMNS", "as_float", "write_history"]

HISTORY_COLUMNS = ("epoch", "phase", "train_loss", "valid_loss", "accuracy", "perplexity", "time")


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(history)


def as_float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value.item() if isinstance(value, torch.Tensor) else value)
