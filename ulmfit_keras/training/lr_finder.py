"""fastai's learning-rate finder for Keras: an exponential LR sweep and its per-batch losses.

The plot of the result is drawn by the task drivers (``ulmfit_tasks.rendering.plot_lr_finder``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

logger = logging.getLogger(__name__)

__all__ = ["ExponentialSweep", "LRFinderResult", "find_lr"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ExponentialSweep(keras.optimizers.schedules.LearningRateSchedule):
    """Exponential rise: ``start * (end / start) ** (step / (steps - 1))``, ``end`` at the last."""

    def __init__(self, start: float, end: float, steps: int) -> None:
        if not 0 < start < end:
            raise ValueError(f"need 0 < start < end, got {start}, {end}")
        if steps < 2:
            raise ValueError(f"the sweep needs at least 2 steps, got {steps}")
        self.start, self.end, self.steps = float(start), float(end), int(steps)

    def __call__(self, step):
        fraction = ops.minimum(ops.cast(step, "float32") / float(self.steps - 1), 1.0)
        return self.start * ops.exp(fraction * math.log(self.end / self.start))

    def value(self, step: int) -> float:
        """The rate at ``step`` in plain Python (for the plot's x axis)."""
        fraction = min(step / (self.steps - 1), 1.0)
        return self.start * (self.end / self.start) ** fraction

    def get_config(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "steps": self.steps}


class _BatchLosses(keras.callbacks.Callback):
    """Per-batch losses; stops once the loss exceeds 4x its minimum (fastai's divergence rule).

    Keras 3 batch logs hold the running mean of the epoch, so batch ``i``'s own loss is
    ``i * mean_i - (i - 1) * mean_{i-1}``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []
        self._previous_mean = 0.0

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        mean = float((logs or {})["loss"])
        loss = (batch + 1) * mean - batch * self._previous_mean
        self._previous_mean = mean
        self.losses.append(loss)
        if not math.isfinite(loss) or loss > 4.0 * min(self.losses):
            self.model.stop_training = True


@dataclass(frozen=True)
class LRFinderResult:
    """Rates tried, the loss at each, and fastai's suggestion (the rate of least loss / 10)."""

    lrs: list[float]
    losses: list[float]

    @property
    def suggestion(self) -> float:
        finite = [
            (loss, lr)
            for lr, loss in zip(self.lrs, self.losses, strict=True)
            if math.isfinite(loss)
        ]
        return min(finite)[1] / 10.0 if finite else self.lrs[0]


def find_lr(
    model: keras.Model,
    inputs: np.ndarray,
    targets: Any,
    loss: Any,
    steps: int,
    batch_size: int,
    start: float = 1e-7,
    end: float = 10.0,
    seed: int = 0,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> LRFinderResult:
    """Train ``steps`` batches with the rate rising exponentially from ``start`` to ``end``.

    The model's weights change: rebuild it before real training. Batches are drawn with a fixed
    seed, cycling through the data when ``steps * batch_size`` exceeds it. ``callbacks`` run
    with the sweep (e.g. a :class:`~ulmfit_keras.WeightDropCallback` that training would use).
    """
    schedule = ExponentialSweep(start, end, steps)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss=loss)
    order = np.random.default_rng(seed).permutation(len(inputs))
    index = np.resize(order, steps * batch_size)
    picked = keras.tree.map_structure(lambda array: np.asarray(array)[index], targets)
    recorder = _BatchLosses()
    model.fit(
        inputs[index],
        picked,
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        callbacks=[*(callbacks or []), recorder],
        verbose=0,
    )
    lrs = [schedule.value(step) for step in range(len(recorder.losses))]
    logger.info(
        "LR finder: %d steps, loss %.4f -> %.4f", len(lrs), recorder.losses[0], recorder.losses[-1]
    )
    return LRFinderResult(lrs, recorder.losses)
