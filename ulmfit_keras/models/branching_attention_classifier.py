"""The Branching Attention classifier (ulmfit_attention's head): per-position attention scores
softmaxed over valid positions, per-position features, their weighted sum -> Dense(classes);
the attention weights are a second output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from ulmfit_keras.layers.attention_pooling import MaskedSoftmax, WeightedSum
from ulmfit_keras.models.task_model import TaskModel

__all__ = ["BranchingAttentionClassifier"]


def _pointwise_mlp(x, units: Sequence[int], activation: str, prefix: str):
    """Dense layers applied at every position; the last one is linear."""
    for i, width in enumerate(units):
        last = i == len(units) - 1
        x = keras.layers.Dense(
            width, activation=None if last else activation, name=f"{prefix}_dense_{i}"
        )(x)
    return x


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class BranchingAttentionClassifier(TaskModel):
    """Classifier with the Branching Attention head; outputs predictions *and* token weights.

    Over the encoder outputs (after ``dropout``): the attention branch, a pointwise MLP
    ``d -> attention_units... -> 1``, scores each position; :class:`MaskedSoftmax` turns the
    scores into weights over the valid positions. The aggregation branch, a pointwise MLP
    ``d -> aggregation_units`` (default ``50 -> 10``), gives per-token features; their weighted
    sum (:class:`WeightedSum`) feeds ``Dense(num_classes)``.

    Outputs a dict: ``"predictions"`` ``(batch, num_classes)`` and ``"attention_weights"``
    ``(batch, seq)`` (>= 0, 0 on padding, summing to 1 over the valid positions). Compile with a
    loss for ``"predictions"`` only.

    Args:
        backbone: the encoder.
        num_classes: number of classes.
        attention_units: hidden widths of the attention branch (the output width 1 is added).
        aggregation_units: widths of the aggregation branch; the last is the feature size.
        hidden_activation: activation of the hidden layers of both branches.
        dropout: dropout on the encoder outputs before the branches.
        activation: of the output layer (``"softmax"``; ``None`` for logits).
        seed: seed of the dropout.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int,
        attention_units: Sequence[int] = (50,),
        aggregation_units: Sequence[int] = (50, 10),
        hidden_activation: str = "relu",
        dropout: float = 0.1,
        activation: str | None = "softmax",
        seed: int | None = None,
        name: str = "branching_attention_classifier",
        **kwargs: Any,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not aggregation_units:
            raise ValueError("aggregation_units needs at least one layer width")
        attention_units = tuple(int(u) for u in attention_units)
        aggregation_units = tuple(int(u) for u in aggregation_units)
        x = keras.layers.Dropout(dropout, seed=seed, name="attention_input_dropout")(
            backbone.output
        )
        scores = _pointwise_mlp(x, (*attention_units, 1), hidden_activation, "attention")
        weights = MaskedSoftmax(name="attention_weights")(scores)
        features = _pointwise_mlp(x, aggregation_units, hidden_activation, "aggregation")
        pooled = WeightedSum(name="attention_pooling")([weights, features])
        predictions = keras.layers.Dense(num_classes, activation=activation, name="predictions")(
            pooled
        )
        super().__init__(
            inputs=backbone.input,
            outputs={"predictions": predictions, "attention_weights": weights},
            name=name,
            **kwargs,
        )
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.attention_units = attention_units
        self.aggregation_units = aggregation_units
        self.hidden_activation = hidden_activation
        self.dropout = float(dropout)
        self.activation = activation
        self.seed = seed

    def get_config(self) -> dict[str, Any]:
        return {
            **self._task_config(),
            "num_classes": self.num_classes,
            "attention_units": list(self.attention_units),
            "aggregation_units": list(self.aggregation_units),
            "hidden_activation": self.hidden_activation,
            "dropout": self.dropout,
            "activation": self.activation,
            "seed": self.seed,
        }
