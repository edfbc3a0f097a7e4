"""ULMFiT's learning-rate schedules as ``keras.optimizers.schedules.LearningRateSchedule``.

* :class:`SlantedTriangularLR`: Howard & Ruder (2018), eq. 3 -- a short linear warm-up to
  ``max_lr`` over ``cut_frac`` of the steps, then a long linear decay to ``max_lr / ratio``.
* :class:`OneCycleLR`: fastai's ``fit_one_cycle`` learning rate -- cosine from
  ``max_lr / div`` up to ``max_lr`` over ``pct_start`` of the steps, then cosine down to
  ``max_lr / div_final``.

``step`` is the optimizer's iteration counter (0-based, one per batch); ``total_steps`` is
``epochs * steps_per_epoch``. Past ``total_steps`` both stay at their final value.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

__all__ = ["OneCycleLR", "SlantedTriangularLR"]


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class SlantedTriangularLR(keras.optimizers.schedules.LearningRateSchedule):
    """Slanted triangular learning rate (STLR).

    With ``cut = floor(total_steps * cut_frac)``: ``p = t / cut`` for ``t < cut``, else
    ``p = 1 - (t - cut) / (cut * (1 / cut_frac - 1))``; ``lr = max_lr * (1 + p * (ratio - 1)) /
    ratio``.

    Args:
        max_lr: the peak learning rate.
        total_steps: number of optimizer steps of the whole run.
        cut_frac: fraction of the steps spent increasing (paper: 0.1).
        ratio: how much smaller the lowest rate is than ``max_lr`` (paper: 32).
    """

    def __init__(
        self, max_lr: float, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0
    ) -> None:
        _check_positive(max_lr=max_lr, total_steps=total_steps, ratio=ratio)
        if not 0.0 < cut_frac < 1.0:
            raise ValueError(f"cut_frac must be in (0, 1), got {cut_frac}")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.cut_frac = float(cut_frac)
        self.ratio = float(ratio)
        # At least one warm-up step, so p never divides by zero on very short runs.
        self.cut = max(1, math.floor(self.total_steps * self.cut_frac))

    def __call__(self, step):
        t = ops.minimum(ops.cast(step, "float32"), float(self.total_steps))
        cut = float(self.cut)
        rising = t / cut
        falling = 1.0 - (t - cut) / (cut * (1.0 / self.cut_frac - 1.0))
        p = ops.maximum(ops.where(t < cut, rising, falling), 0.0)
        return self.max_lr * (1.0 + p * (self.ratio - 1.0)) / self.ratio

    def get_config(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "cut_frac": self.cut_frac,
            "ratio": self.ratio,
        }


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class OneCycleLR(keras.optimizers.schedules.LearningRateSchedule):
    """fastai's one-cycle learning rate (``combined_cos``).

    With ``pos = step / total_steps`` and ``cos_anneal(a, b, x) = a + (1 + cos(pi * (1 - x))) *
    (b - a) / 2`` (fastai's ``SchedCos``): for ``pos < pct_start``,
    ``cos_anneal(max_lr / div, max_lr, pos / pct_start)``; after,
    ``cos_anneal(max_lr, max_lr / div_final, (pos - pct_start) / (1 - pct_start))``.

    Args:
        max_lr: the peak learning rate.
        total_steps: number of optimizer steps of the whole run.
        pct_start: fraction of the steps spent warming up (fastai: 0.25).
        div: initial rate is ``max_lr / div`` (fastai: 25).
        div_final: final rate is ``max_lr / div_final`` (fastai: 1e5).
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.25,
        div: float = 25.0,
        div_final: float = 1e5,
    ) -> None:
        _check_positive(max_lr=max_lr, total_steps=total_steps, div=div, div_final=div_final)
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div = float(div)
        self.div_final = float(div_final)

    @staticmethod
    def _cos_anneal(start: float, end: float, pos):
        # start + (1 + cos(x)) * (end - start) / 2 with x = pi * (1 - pos), written with
        # (1 - cos x) / 2 = sin^2(x / 2) and (1 + cos x) / 2 = cos^2(x / 2): no float32
        # cancellation near the end, where end is 1e5 times smaller than start.
        half = math.pi * (1.0 - pos) / 2.0
        return start * ops.square(ops.sin(half)) + end * ops.square(ops.cos(half))

    def __call__(self, step):
        pos = ops.minimum(ops.cast(step, "float32") / float(self.total_steps), 1.0)
        warm = self._cos_anneal(self.max_lr / self.div, self.max_lr, pos / self.pct_start)
        pos_down = (pos - self.pct_start) / (1.0 - self.pct_start)
        down = self._cos_anneal(self.max_lr, self.max_lr / self.div_final, pos_down)
        return ops.where(pos < self.pct_start, warm, down)

    def get_config(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div": self.div,
            "div_final": self.div_final,
        }
