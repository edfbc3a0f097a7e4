"""What the task drivers draw: which subwords drove a Branching Attention prediction (an HTML
page and a PNG heatmap), and the LR finder's loss curve. Every file is written beside its final
name and renamed, so a crash never leaves a truncated one."""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ulmfit_keras import LRFinderResult

logger = logging.getLogger(__name__)

__all__ = ["plot_lr_finder", "top_tokens", "write_attention_html", "write_attention_png"]


def top_tokens(pieces: Sequence[str], weights: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` subwords with the largest weights, largest first."""
    weights = np.asarray(weights)[: len(pieces)]
    order = np.argsort(-weights, kind="stable")[:k]
    return [(pieces[i], float(weights[i])) for i in order]


def write_attention_html(
    path: str | os.PathLike,
    rows: Sequence[tuple[Sequence[str], np.ndarray, str]],
) -> Path:
    """One line per example, each subword on a red background as strong as its weight.

    Args:
        path: the ``.html`` file to write.
        rows: ``(pieces, weights, caption)`` per example; weights are scaled per row to its max.
    """
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>attention</title>',
        "</head><body>",
    ]
    for pieces, weights, caption in rows:
        weights = np.asarray(weights, dtype=np.float64)[: len(pieces)]
        top = float(weights.max()) if weights.size else 1.0
        spans = []
        for piece, weight in zip(pieces, weights, strict=True):
            alpha = weight / top if top > 0 else 0.0
            spans.append(
                f'<span title="{weight:.4f}" style="background: rgba(255,0,0,{alpha:.3f})">'
                f"{html.escape(piece)}</span>"
            )
        lines.append(f"<p><b>{html.escape(caption)}</b><br>{' '.join(spans)}</p>")
    lines.append("</body></html>")
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)  # a crash never leaves a truncated page under the final name
    return path


def write_attention_png(
    path: str | os.PathLike,
    rows: Sequence[tuple[Sequence[str], np.ndarray, str]],
) -> Path:
    """A heatmap: one row per example, one cell per subword, shaded by its weight."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    width = max(len(pieces) for pieces, _, _ in rows)
    grid = np.full((len(rows), width), np.nan)
    for r, (pieces, weights, _) in enumerate(rows):
        grid[r, : len(pieces)] = np.asarray(weights)[: len(pieces)]
    # Wide enough to read the pieces, capped so long texts do not make a giant image.
    fig, ax = plt.subplots(figsize=(min(40.0, max(4.0, 0.6 * width)), 0.8 * len(rows) + 1.0))
    image = ax.imshow(grid, cmap="Reds", aspect="auto", vmin=0.0)
    for r, (pieces, _, _) in enumerate(rows):
        for c, piece in enumerate(pieces):
            ax.text(c, r, piece, ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), [caption for _, _, caption in rows], fontsize=7)
    ax.set_xticks([])
    fig.colorbar(image, ax=ax, label="attention weight")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_lr_finder(result: LRFinderResult, path: str | os.PathLike) -> Path:
    """Loss against learning rate (log scale) as a PNG, the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses)
    ax.axvline(
        result.suggestion, color="red", linestyle="--", label=f"suggested {result.suggestion:.2e}"
    )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)  # never a half-written plot under the final name
    return path
