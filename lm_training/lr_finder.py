"""Stage 04's ``--lr-find``: fastai's LR finder on the model as it would start training."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lm_training.config import LRFindSummary, TrainConfig, output_paths
from lm_training.distributed import setup_distributed
from lm_training.history import as_float
from lm_training.run import prepare_run
from ulmfit_core.artifacts import atomic_file
from ulmfit_core.errors import InputError

__all__ = ["find_learning_rate"]


def find_learning_rate(
    cfg: TrainConfig, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100
) -> LRFindSummary:
    """Run fastai's ``lr_find`` on the model as it would start training; save the plot as PNG.

    The model, data and optimizer are those of the first phase (fine-tuning: the pretrained
    weights with the recurrent layers frozen). Nothing else is written.
    """
    started = time.perf_counter()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("--lr-find runs in one process: start it without torchrun")
    dist = setup_distributed(cfg.device)
    with tempfile.TemporaryDirectory(prefix="lm-lr-find-") as work:
        run = prepare_run(
            dataclasses.replace(cfg, resume=False, save_path=Path(work)),
            dist,
            Path(work) / "corpus",
            for_lr_find=True,
        )
        learn = run.learn
        if run.phases[0].frozen:
            learn.freeze_to(-1)
        suggestion = learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it, show_plot=False)
        suggested = float(suggestion.valley)
        plot_path = output_paths(cfg.save_path, cfg.exp_name).lr_find_plot
        _plot_lr_find(learn.recorder.lrs, learn.recorder.losses, suggested, plot_path)
    return LRFindSummary(suggested, plot_path, time.perf_counter() - started)


def _plot_lr_find(lrs: list[float], losses: list[Any], suggested: float, path: Path) -> None:
    """fastai's LR-finder plot, drawn on an Agg canvas (no display, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    skip_end = 5 if len(lrs) > 10 else 0
    lrs = [float(x) for x in lrs[: len(lrs) - skip_end]]
    losses = [as_float(x) for x in losses[: len(losses) - skip_end]]
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(lrs, losses)
    if lrs:
        idx = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - math.log(suggested))))
        ax.plot(lrs[idx], losses[idx], "o", c="C1", label=f"valley: {suggested:.2e}")
        ax.legend(loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("Learning Rate")
    ax.set_ylabel("Loss")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
