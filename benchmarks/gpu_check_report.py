"""Rows, verdicts and the one table of the GPU check (``benchmarks/gpu_check.py``).

Standard library only: the fastai-environment part and the TensorFlow-environment part
(``benchmarks/gpu_check_keras.py``) both build their rows with it, and the TF part hands its rows
to the main script as JSON (:func:`rows_to_json` / :func:`rows_from_json`).

A row is one measured figure against one stated tolerance or target. Parity and training rows
*gate*: a FAIL there makes the exit status non-zero. Speed rows do not (a slow GPU is worth
knowing, not a broken one); their FAIL is shown as ``FAIL (info)``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAIL",
    "PASS",
    "SKIP",
    "Row",
    "Tolerance",
    "error_figure",
    "exit_code",
    "format_diff",
    "format_table",
    "parity_row",
    "rows_from_json",
    "rows_to_json",
    "skip_row",
    "summary_line",
]

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
VERDICTS = (PASS, FAIL, SKIP)
HEADER = ("check", "setting", "figure", "tolerance/target", "result")


@dataclass(frozen=True)
class Tolerance:
    """``|got - want| <= atol + rtol * |want|`` element-wise (``numpy.allclose``'s rule).

    The comparison code computes the worst *excess* ``max(|got - want| - rtol * |want|)``; the
    tolerance holds when that is finite and at most ``atol``.
    """

    atol: float
    rtol: float = 0.0

    def holds(self, excess: float) -> bool:
        """Whether the worst excess over ``rtol * |want|`` is within ``atol`` (NaN: no)."""
        return math.isfinite(excess) and excess <= self.atol

    def describe(self) -> str:
        # No "|" in the text: the table is a Markdown pipe table.
        if not self.rtol:
            return f"abs diff <= {self.atol:.2g}"
        return f"abs diff <= {self.atol:.2g} + {self.rtol:.2g}*abs(ref)"


@dataclass(frozen=True)
class Row:
    """One line of the table.

    Args:
        check: what is checked (e.g. ``forget-mult triton``).
        setting: the conditions (dtype, sizes, steps).
        figure: the measured value, formatted.
        target: the tolerance or target it is held to.
        verdict: ``PASS``, ``FAIL`` or ``SKIP``.
        gating: a ``FAIL`` makes the exit status non-zero (``False`` for speed rows).
        value: the figure as a number, for ``--json-out`` (``None`` when there is none).
    """

    check: str
    setting: str
    figure: str
    target: str
    verdict: str
    gating: bool = True
    value: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def shown_verdict(self) -> str:
        return f"{FAIL} (info)" if self.verdict == FAIL and not self.gating else self.verdict


def format_diff(value: float) -> str:
    """A max abs diff as the table shows it: ``3.1e-07``; NaN and inf spelled out."""
    return f"{value:.1e}" if math.isfinite(value) else str(value)


def parity_row(check: str, setting: str, max_diff: float, excess: float, tol: Tolerance) -> Row:
    """A gating row for one comparison: the max abs diff, the verdict from ``tol``."""
    verdict = PASS if tol.holds(excess) else FAIL
    value = max_diff if math.isfinite(max_diff) else None
    return Row(
        check,
        setting,
        f"max abs diff {format_diff(max_diff)}",
        tol.describe(),
        verdict,
        value=value,
    )


def skip_row(check: str, setting: str, reason: str, target: str = "") -> Row:
    """A row that was not run, with why in the figure column."""
    return Row(check, setting, f"skipped: {reason}", target, SKIP)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_figure(err: BaseException, limit: int = 100) -> str:
    """``error: Type: first informative line`` of an exception, for the figure column.

    Keras wraps layer errors in "Exception encountered when calling ..." with the cause in bold
    (ANSI codes) further down: that first line is skipped and the codes are removed.
    """
    lines = [_ANSI.sub("", line).strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered")]
    text = f"error: {type(err).__name__}" + (f": {lines[0]}" if lines else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exit_code(rows: Iterable[Row]) -> int:
    """1 when a gating row failed, else 0 (SKIP rows and speed rows never fail the run)."""
    return int(any(row.verdict == FAIL and row.gating for row in rows))


def summary_line(rows: Sequence[Row]) -> str:
    """``12 PASS, 1 FAIL, 3 SKIP`` plus how the exit status was decided."""
    counts = {v: sum(row.verdict == v for row in rows) for v in VERDICTS}
    text = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    informative = sum(row.verdict == FAIL and not row.gating for row in rows)
    if informative:
        text += f" ({informative} speed target(s) missed: reported, not counted in the exit status)"
    return text


def format_table(rows: Sequence[Row]) -> str:
    """The rows as one pipe table (Markdown-compatible, aligned for a terminal)."""
    cells = [HEADER, *((r.check, r.setting, r.figure, r.target, r.shown_verdict) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(HEADER), rule, *(line(c) for c in cells[1:])])


def rows_to_json(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """JSON-ready dicts, one per row (the keys of :class:`Row`)."""
    return [dataclasses.asdict(row) for row in rows]


def rows_from_json(data: Iterable[dict[str, Any]]) -> list[Row]:
    """Rows back from :func:`rows_to_json`; unknown keys are an error (a version mismatch)."""
    return [Row(**item) for item in data]
