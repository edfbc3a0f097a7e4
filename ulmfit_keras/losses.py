"""The tagger's loss: per-token cross-entropy over the positions whose label is not ignored."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# Loss.__call__ reads a mask attached to the per-token losses (keras.src: Keras is pinned, and
# this is the function Keras' own layers use; it has no public alias).
from keras.src.backend.common.masking import set_keras_mask

from ulmfit_keras.word_alignment import IGNORE_LABEL

__all__ = ["MaskedSparseCategoricalCrossentropy"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Per-token sparse cross-entropy averaged over positions whose label is not ignored.

    The per-token losses carry a Keras mask ``y_true != ignore_label``; Keras combines it with
    the model output's padding mask and averages over the positions left.

    Args:
        ignore_label: label of unscored positions (padding, BOS/EOS, later subwords).
        from_logits: ``y_pred`` are logits rather than probabilities.
    """

    def __init__(
        self,
        ignore_label: int = IGNORE_LABEL,
        from_logits: bool = False,
        name: str = "masked_sparse_categorical_crossentropy",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.ignore_label = int(ignore_label)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        keep = ops.not_equal(y_true, self.ignore_label)
        # Ignored labels are out of range for the cross-entropy: use class 0, then mask them.
        safe = ops.where(keep, y_true, ops.zeros_like(y_true))
        losses = keras.losses.sparse_categorical_crossentropy(
            safe, y_pred, from_logits=self.from_logits
        )
        losses = ops.where(keep, losses, ops.zeros_like(losses))
        set_keras_mask(losses, keep)
        return losses

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"ignore_label": self.ignore_label, "from_logits": self.from_logits})
        return config
