"""Text classifier over a :class:`~ulmfit_keras.ULMFiTEncoder` backbone (fastai's
``PoolingLinearClassifier``): pooling -> BatchNorm -> Dropout -> Dense(50, relu) -> BatchNorm ->
Dropout -> Dense(classes, softmax). Why the BatchNorm settings are what they are:
:mod:`ulmfit_keras.models.pooled_head`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from ulmfit_keras.models.pooled_head import PooledTaskModel, check_dropout, pooled_mlp

__all__ = ["ULMFiTClassifier"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTClassifier(PooledTaskModel):
    """Text classifier: ``backbone`` -> :class:`MaskedConcatPool` -> fastai's classifier MLP.

    Layers: ``concat_pooling`` -> ``head_batch_norm_0`` -> ``head_dropout_0`` -> ``head_dense``
    (relu) -> ``head_batch_norm_1`` -> ``head_dropout_1`` -> ``predictions``. Shares the
    backbone's layers: training the classifier fine-tunes the encoder.

    Args:
        backbone: the encoder.
        num_classes: number of classes.
        hidden_dim: width of the hidden layer (fastai: 50).
        dropout: rates before the hidden and the output layer (fastai's classifier:
            ``(0.4, 0.1)`` times ``drop_mult``).
        use_batch_norm: the BatchNorm layers (``--no-batch-norm`` turns them off).
        activation: of the output layer (``"softmax"``; ``None`` for logits).
        seed: seed of the head's dropouts.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int,
        hidden_dim: int = 50,
        dropout: Sequence[float] = (0.4, 0.1),
        use_batch_norm: bool = True,
        activation: str | None = "softmax",
        seed: int | None = None,
        name: str = "ulmfit_classifier",
        **kwargs: Any,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        dropout = check_dropout(dropout)
        x = pooled_mlp(backbone.output, hidden_dim, dropout, use_batch_norm, seed)
        outputs = keras.layers.Dense(num_classes, activation=activation, name="predictions")(x)
        super().__init__(inputs=backbone.input, outputs=outputs, name=name, **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.hidden_dim = int(hidden_dim)
        self.dropout = dropout
        self.use_batch_norm = bool(use_batch_norm)
        self.activation = activation
        self.seed = seed

    def get_config(self) -> dict[str, Any]:
        config = self._task_config()
        config.update({"num_classes": self.num_classes, "activation": self.activation})
        return config
