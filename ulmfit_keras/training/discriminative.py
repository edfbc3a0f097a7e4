"""Discriminative learning rates: group ``g`` of ``n`` (0 = embedding) trains at
``lr / factor ** (n - 1 - g)`` (ULMFiT: ``factor = 2.6``; the head at ``lr``).

:func:`discriminative_multipliers` gives ``{variable.path: multiplier}`` for the groups of
:func:`~ulmfit_keras.layer_groups`, and :class:`DiscriminativeAdam` / :class:`DiscriminativeAdamW`
/ :class:`DiscriminativeSGD` apply them: the Keras optimizer with ``learning_rate * multiplier``
in each variable's update. Scaling the *gradients* instead would be wrong for Adam, which is
invariant to gradient scale. Weight decay (AdamW) uses the base rate, as Keras applies it outside
the update step. They combine with :class:`~ulmfit_keras.GradualUnfreezing` (fastai uses both),
and work with ``model.fit``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import keras

from ulmfit_keras.training.layer_groups import LayerGroup

logger = logging.getLogger(__name__)

__all__ = [
    "DISCRIMINATIVE_FACTOR",
    "DiscriminativeAdam",
    "DiscriminativeAdamW",
    "DiscriminativeSGD",
    "discriminative_multipliers",
]

DISCRIMINATIVE_FACTOR = 2.6


def discriminative_multipliers(
    groups: list[LayerGroup], factor: float = DISCRIMINATIVE_FACTOR
) -> dict[str, float]:
    """``{variable.path: 1 / factor ** depth}``, depth 0 for the top group (the head)."""
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    multipliers: dict[str, float] = {}
    for index, group in enumerate(groups):
        depth = len(groups) - 1 - index
        for variable in group.variables:
            multipliers[variable.path] = 1.0 / factor**depth
    return multipliers


class _LRMultipliers:
    """Mixin for a Keras optimizer: each variable's update runs at ``lr * multiplier[path]``."""

    def __init__(self, *args: Any, lr_multipliers: Mapping[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}

    def update_step(self, gradient, variable, learning_rate):
        # The TF backend hands over the raw tf.Variable (no ``path``): find the Keras variable the
        # optimizer was built with. Variables not in the table keep the base rate. The lookup is
        # Python, done once at trace time.
        keras_variable = self._trainable_variables[self._get_variable_index(variable)]
        multiplier = self.lr_multipliers.get(keras_variable.path, 1.0)
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class DiscriminativeAdam(_LRMultipliers, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with per-variable learning-rate multipliers."""


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class DiscriminativeAdamW(_LRMultipliers, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with per-variable learning-rate multipliers."""


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class DiscriminativeSGD(_LRMultipliers, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with per-variable learning-rate multipliers."""
