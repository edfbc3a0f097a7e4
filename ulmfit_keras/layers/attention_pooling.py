"""The pooling of the Branching Attention head: a softmax over valid positions, a weighted sum."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["MaskedSoftmax", "WeightedSum"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class MaskedSoftmax(keras.layers.Layer):
    """``(batch, seq, 1)`` scores + mask -> ``(batch, seq)`` weights: softmax over valid positions.

    Padded positions get the dtype's lowest finite score before the softmax (not ``-inf``:
    exporters may lower ``where`` to arithmetic, where ``0 * -inf`` is NaN), so their weight
    underflows to exactly 0 and the
    valid weights sum to 1 (the original ulmfit_attention filled them with 0, which still gave
    padding weight). A row with no valid position gets all-zero weights, not NaN. The output
    carries no mask.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, scores, mask=None):
        scores = ops.squeeze(scores, axis=-1)
        if mask is None:
            return ops.softmax(scores, axis=-1)
        mask = ops.cast(mask, "bool")
        masked = ops.where(
            mask,
            scores,
            ops.full_like(scores, np.finfo(keras.backend.standardize_dtype(scores.dtype)).min),
        )
        weights = ops.softmax(masked, axis=-1)
        # A row with no valid position is uniform here: zero it (and nothing else) with the mask.
        return ops.where(mask, weights, ops.zeros_like(weights))

    def compute_mask(self, inputs, previous_mask=None):
        del inputs, previous_mask  # the weights are 0 on padding: no mask needed downstream
        return None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class WeightedSum(keras.layers.Layer):
    """``[weights (batch, seq), values (batch, seq, d)]`` -> ``(batch, d)``: ``sum_t w_t v_t``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        del mask  # the weights already vanish on padding
        weights, values = inputs
        return ops.sum(weights[..., None] * values, axis=1)

    def compute_mask(self, inputs, previous_mask=None):
        del inputs, previous_mask
        return None

    def compute_output_shape(self, input_shape):
        weights_shape, values_shape = input_shape
        return (weights_shape[0], values_shape[-1])
