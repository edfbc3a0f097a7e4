"""fastai's ``masked_concat_pool`` as a layer: ``[last valid, max, mean]`` under the pad mask,
optionally over fastai's ``SentenceEncoder`` window (the last chunks within ``max_len``)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["MaskedConcatPool", "pool_start"]


def pool_start(lengths, max_len: int, bptt: int):
    """First pooled position of each row in fastai's ``SentenceEncoder``: the encoder reads a
    text in ``bptt`` chunks (state carried) and keeps the outputs of the chunks starting at
    ``i`` with ``length - i <= max_len``; so 0 for texts up to ``max_len`` tokens, else
    ``ceil((length - max_len) / bptt) * bptt``."""
    over = ops.maximum(lengths - max_len, 0)
    return ops.floor_divide(over + (bptt - 1), bptt) * bptt


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class MaskedConcatPool(keras.layers.Layer):
    """``(batch, seq, d)`` + mask -> ``(batch, 3 * d)``: ``[last valid, masked max, masked mean]``.

    fastai's ``masked_concat_pool`` for post-padded batches: "last" is the output at index
    ``n_valid - 1`` of each row, max and mean run over valid positions only. Without a mask every
    position is valid. A row with no valid position pools to zeros (not ``-inf`` / NaN). The
    output carries no Keras mask, so layers after it (BatchNorm) see a plain tensor.

    Args:
        max_len: ``None`` pools over the whole text. Else fastai's long-document semantics
            (``keep="last"``): the recurrent layers have read the whole text, and max and mean
            cover the last chunks of ``bptt`` positions within ``max_len`` (:func:`pool_start`);
            "last" is still the last valid position.
        bptt: fastai's chunk length (used with ``max_len``).
    """

    def __init__(self, max_len: int | None = None, bptt: int = 72, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if max_len is not None and not 1 <= bptt <= max_len:
            # fastai keeps no chunk at all when max_len < bptt
            raise ValueError(f"need 1 <= bptt <= max_len, got bptt {bptt}, max_len {max_len}")
        self.max_len = None if max_len is None else int(max_len)
        self.bptt = int(bptt)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        mask = ops.cast(mask, "bool")
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)  # (batch,)
        has_any = ops.cast(lengths > 0, inputs.dtype)[:, None]
        last_index = ops.maximum(lengths - 1, 0)
        last = ops.take_along_axis(inputs, last_index[:, None, None], axis=1)[:, 0, :]
        pooled = lengths
        if self.max_len is not None:
            start = pool_start(lengths, self.max_len, self.bptt)
            positions = ops.arange(ops.shape(inputs)[1], dtype="int32")[None, :]
            mask = ops.logical_and(mask, positions >= start[:, None])
            pooled = lengths - start
        valid = ops.cast(mask, inputs.dtype)[..., None]  # (batch, seq, 1)
        # The dtype's lowest finite value, not -inf: exporters (tf2onnx) may lower `where` to
        # arithmetic, where 0 * -inf is NaN. Rows with no valid position are zeroed by has_any.
        lowest = ops.full_like(inputs, np.finfo(keras.backend.standardize_dtype(inputs.dtype)).min)
        max_pool = ops.max(ops.where(mask[..., None], inputs, lowest), axis=1)
        max_pool = ops.where(has_any > 0, max_pool, ops.zeros_like(max_pool))
        mean_pool = ops.sum(inputs * valid, axis=1) / ops.maximum(
            ops.cast(pooled, inputs.dtype)[:, None], 1.0
        )
        return ops.concatenate([last * has_any, max_pool, mean_pool], axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_len": self.max_len, "bptt": self.bptt}

    def compute_mask(self, inputs, previous_mask=None):
        del inputs, previous_mask  # pooling ends the sequence mask
        return None

    def compute_output_shape(self, input_shape):
        last = None if input_shape[-1] is None else 3 * input_shape[-1]
        return (input_shape[0], last)
