"""Text classifier over a :class:`~ulmfit_keras.ULMFiTEncoder` backbone (fastai's
``PoolingLinearClassifier``): pooling -> BatchNorm -> Dropout -> Dense(50, relu) -> BatchNorm ->
Dropout -> Dense(classes, softmax). Why the BatchNorm settings are what they are:
:mod:`ulmfit_keras.models.pooled_head`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from ulmfit_keras.models.pooled_head import (
    BN_EPSILON,
    BN_MOMENTUM,
    PooledTaskModel,
    check_dropout,
    check_keep,
    pooled_mlp,
)

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
        keep: ``"first"`` pools over the whole (already cut) text; ``"last"`` is fastai's
            long-document semantics: the encoder reads the whole text and the pooling covers the
            last chunks of ``bptt`` tokens within ``max_len`` (``MaskedConcatPool``).
        max_len, bptt: fastai's ``SentenceEncoder`` window (used with ``keep="last"``).
        bn_momentum, bn_epsilon: the BatchNorm layers' (Keras' momentum: PyTorch's ``1 - it``).
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
        keep: str = "first",
        max_len: int = 72 * 20,
        bptt: int = 72,
        bn_momentum: float = BN_MOMENTUM,
        bn_epsilon: float = BN_EPSILON,
        name: str = "ulmfit_classifier",
        **kwargs: Any,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        dropout = check_dropout(dropout)
        keep = check_keep(keep)
        x = pooled_mlp(
            backbone.output,
            hidden_dim,
            dropout,
            use_batch_norm,
            seed,
            pool_max_len=max_len if keep == "last" else None,
            bptt=bptt,
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
        )
        outputs = keras.layers.Dense(num_classes, activation=activation, name="predictions")(x)
        super().__init__(inputs=backbone.input, outputs=outputs, name=name, **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.hidden_dim = int(hidden_dim)
        self.dropout = dropout
        self.use_batch_norm = bool(use_batch_norm)
        self.activation = activation
        self.seed = seed
        self.keep, self.max_len, self.bptt = keep, int(max_len), int(bptt)
        self.bn_momentum, self.bn_epsilon = float(bn_momentum), float(bn_epsilon)

    def get_config(self) -> dict[str, Any]:
        config = self._task_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "activation": self.activation,
                "keep": self.keep,
                "max_len": self.max_len,
                "bptt": self.bptt,
                "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
            }
        )
        return config
