"""fastai's ``RNNDropout``: one dropout mask per sequence, shared over time."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["RNNDropout"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class RNNDropout(keras.layers.Layer):
    """Dropout whose mask is drawn once per sequence and reused at every timestep.

    In training, ``x * mask`` with ``mask`` of shape ``(batch, 1, ..., features)``: each unit is
    zeroed with probability ``rate`` for the whole sequence, and kept units are scaled by
    ``1 / (1 - rate)`` (fastai's ``dropout_mask``). In inference it is the identity. The Keras mask
    passes through unchanged.

    Args:
        rate: probability of dropping a unit.
        seed: seed of the layer's random generator (``None``: random).
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training: bool = False):
        if not training or self.rate == 0.0:
            return inputs
        shape = ops.shape(inputs)
        # (batch, 1, ..., 1, features): the same mask at every timestep of a sequence.
        noise_shape = (shape[0], *([1] * (len(shape) - 2)), shape[-1])
        return keras.random.dropout(
            inputs, self.rate, noise_shape=noise_shape, seed=self.seed_generator
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
