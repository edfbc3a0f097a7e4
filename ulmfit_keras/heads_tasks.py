"""Downstream task heads over a :class:`~ulmfit_keras.ULMFiTEncoder` backbone.

* :class:`MaskedConcatPool`: fastai's ``masked_concat_pool`` -- ``[last valid, max, mean]`` of
  the encoder outputs under the pad mask, as a layer that ends the mask.
* :class:`ULMFiTClassifier`: pooling -> BatchNorm -> Dropout -> Dense(50, relu) -> BatchNorm ->
  Dropout -> Dense(classes, softmax), fastai's ``PoolingLinearClassifier``.
* :class:`ULMFiTRegressor`: the same with one linear output; :class:`LabelNormalizer` scales the
  targets for training and back at prediction.
* :class:`BranchingAttentionClassifier`: the ulmfit_attention head -- per-position attention
  scores softmaxed over valid positions (:class:`MaskedSoftmax`), per-position features, their
  weighted sum (:class:`WeightedSum`) -> Dense(classes); the weights are an output.

Why BatchNorm failed in the predecessor (tf2qrnn's ``heads.py`` / ``ConcatPooler``), and what is
done here:

* it copied PyTorch's ``momentum=0.1`` into Keras, where the convention is reversed
  (Keras ``moving = momentum * moving + (1 - momentum) * batch``): its moving statistics were
  90 % the last training batch, so inference ran on one batch's noisy statistics. Here BatchNorm
  uses Keras ``momentum=0.9`` (= PyTorch 0.1) and ``epsilon=1e-5``;
* its fixed-length pooler took ``x[:, -1]`` and max/mean over all positions, padding included,
  so the pooled features (and BatchNorm's statistics) depended on how much padding a batch had.
  :class:`MaskedConcatPool` reads only valid positions;
* a pooling layer that lets the encoder's ``(batch, seq)`` Keras mask through hands it to
  ``BatchNormalization`` over ``(batch, features)``, which Keras 3 rejects (its mask must have one
  dimension less than the input). :class:`MaskedConcatPool` consumes the mask and returns none.

Dropout, BatchNorm and the rest follow Keras' ``training`` flag as ``model.fit`` /
``model.predict`` set it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

logger = logging.getLogger(__name__)

__all__ = [
    "BranchingAttentionClassifier",
    "LabelNormalizer",
    "MaskedConcatPool",
    "MaskedSoftmax",
    "ULMFiTClassifier",
    "ULMFiTRegressor",
    "WeightedSum",
]

POOLING_NAME = "concat_pooling"
# PyTorch BatchNorm1d defaults (fastai's head): momentum 0.1 == Keras momentum 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class MaskedConcatPool(keras.layers.Layer):
    """``(batch, seq, d)`` + mask -> ``(batch, 3 * d)``: ``[last valid, masked max, masked mean]``.

    fastai's ``masked_concat_pool`` for post-padded batches: "last" is the output at index
    ``n_valid - 1`` of each row, max and mean run over valid positions only. Without a mask every
    position is valid. A row with no valid position pools to zeros (not ``-inf`` / NaN). The
    output carries no Keras mask, so layers after it (BatchNorm) see a plain tensor.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        mask = ops.cast(mask, "bool")
        valid = ops.cast(mask, inputs.dtype)[..., None]  # (batch, seq, 1)
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)  # (batch,)
        has_any = ops.cast(lengths > 0, inputs.dtype)[:, None]
        last_index = ops.maximum(lengths - 1, 0)
        last = ops.take_along_axis(inputs, last_index[:, None, None], axis=1)[:, 0, :]
        neg_inf = ops.full_like(inputs, -np.inf)
        # Rows with no valid position would give -inf: zero them through has_any.
        max_pool = ops.max(ops.where(mask[..., None], inputs, neg_inf), axis=1)
        max_pool = ops.where(has_any > 0, max_pool, ops.zeros_like(max_pool))
        mean_pool = ops.sum(inputs * valid, axis=1) / ops.maximum(
            ops.cast(lengths, inputs.dtype)[:, None], 1.0
        )
        return ops.concatenate([last * has_any, max_pool, mean_pool], axis=-1)

    def compute_mask(self, inputs, previous_mask=None):
        del inputs, previous_mask  # pooling ends the sequence mask
        return None

    def compute_output_shape(self, input_shape):
        last = None if input_shape[-1] is None else 3 * input_shape[-1]
        return (input_shape[0], last)


def _pooled_mlp(
    x,
    hidden_dim: int,
    dropout: Sequence[float],
    use_batch_norm: bool,
    seed: int | None,
):
    """fastai's two ``LinBnDrop`` blocks up to the hidden layer; returns the pre-output tensor."""
    x = MaskedConcatPool(name=POOLING_NAME)(x)
    if use_batch_norm:
        x = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="head_batch_norm_0"
        )(x)
    x = keras.layers.Dropout(dropout[0], seed=seed, name="head_dropout_0")(x)
    x = keras.layers.Dense(hidden_dim, activation="relu", name="head_dense")(x)
    if use_batch_norm:
        x = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="head_batch_norm_1"
        )(x)
    seed_1 = None if seed is None else seed + 1
    return keras.layers.Dropout(dropout[1], seed=seed_1, name="head_dropout_1")(x)


def _check_dropout(dropout: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(p) for p in dropout)
    if len(values) != 2 or not all(0.0 <= p < 1.0 for p in values):
        raise ValueError(f"dropout must be two rates in [0, 1), got {list(dropout)}")
    return values


def deserialize_backbone(config: dict[str, Any], custom_objects) -> dict[str, Any]:
    """A task model's config with its serialized ``backbone`` turned back into a model."""
    config = dict(config)
    if isinstance(config.get("backbone"), Mapping):
        config["backbone"] = keras.layers.deserialize(
            config["backbone"], custom_objects=custom_objects
        )
    return config


class _PooledTask(keras.Model):
    """Shared config plumbing of the pooled heads (a functional model over the backbone)."""

    def _base_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "hidden_dim": self.hidden_dim,
            "dropout": list(self.dropout),
            "use_batch_norm": self.use_batch_norm,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None):
        return cls(**deserialize_backbone(config, custom_objects))


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTClassifier(_PooledTask):
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
        dropout = _check_dropout(dropout)
        x = _pooled_mlp(backbone.output, hidden_dim, dropout, use_batch_norm, seed)
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
        config = self._base_config()
        config.update({"num_classes": self.num_classes, "activation": self.activation})
        return config


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTRegressor(_PooledTask):
    """Text regressor: the classifier's pooling and MLP with one linear output ``(batch, 1)``.

    Train it on normalized targets (:class:`LabelNormalizer`) and invert its predictions.

    Args:
        backbone: the encoder.
        hidden_dim, dropout, use_batch_norm, seed: as :class:`ULMFiTClassifier`.
    """

    def __init__(
        self,
        backbone: keras.Model,
        hidden_dim: int = 50,
        dropout: Sequence[float] = (0.4, 0.1),
        use_batch_norm: bool = True,
        seed: int | None = None,
        name: str = "ulmfit_regressor",
        **kwargs: Any,
    ) -> None:
        dropout = _check_dropout(dropout)
        x = _pooled_mlp(backbone.output, hidden_dim, dropout, use_batch_norm, seed)
        outputs = keras.layers.Dense(1, name="predictions")(x)
        super().__init__(inputs=backbone.input, outputs=outputs, name=name, **kwargs)
        self.backbone = backbone
        self.hidden_dim = int(hidden_dim)
        self.dropout = dropout
        self.use_batch_norm = bool(use_batch_norm)
        self.seed = seed

    def get_config(self) -> dict[str, Any]:
        return self._base_config()


@dataclass(frozen=True)
class LabelNormalizer:
    """Standardize regression targets: ``(y - mean) / std``, fitted on the training labels.

    A constant label set gets ``std = 1`` (no division by zero). Serializes to a JSON object
    so it can sit next to the model's weights.
    """

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, labels: Sequence[float] | np.ndarray) -> LabelNormalizer:
        values = np.asarray(labels, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise ValueError("cannot fit a label normalizer on no labels")
        if not np.all(np.isfinite(values)):
            raise ValueError("regression labels must be finite numbers")
        std = float(values.std())
        return cls(mean=float(values.mean()), std=std if std > 0.0 else 1.0)

    def transform(self, labels) -> np.ndarray:
        return (np.asarray(labels, dtype=np.float32) - self.mean) / self.std

    def inverse_transform(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.float32) * self.std + self.mean

    def to_json(self) -> str:
        return json.dumps({"mean": self.mean, "std": self.std})

    @classmethod
    def from_json(cls, text: str) -> LabelNormalizer:
        data = json.loads(text)
        return cls(mean=float(data["mean"]), std=float(data["std"]))


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class MaskedSoftmax(keras.layers.Layer):
    """``(batch, seq, 1)`` scores + mask -> ``(batch, seq)`` weights: softmax over valid positions.

    Padded positions get score ``-inf`` before the softmax, so their weight is exactly 0 and the
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
        masked = ops.where(mask, scores, ops.full_like(scores, -np.inf))
        weights = ops.softmax(masked, axis=-1)
        # All -inf rows give NaN: zero them (and nothing else) with the mask.
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


def _pointwise_mlp(x, units: Sequence[int], activation: str, prefix: str):
    """Dense layers applied at every position; the last one is linear."""
    for i, width in enumerate(units):
        last = i == len(units) - 1
        x = keras.layers.Dense(
            width, activation=None if last else activation, name=f"{prefix}_dense_{i}"
        )(x)
    return x


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class BranchingAttentionClassifier(keras.Model):
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
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "num_classes": self.num_classes,
            "attention_units": list(self.attention_units),
            "aggregation_units": list(self.aggregation_units),
            "hidden_activation": self.hidden_activation,
            "dropout": self.dropout,
            "activation": self.activation,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None):
        return cls(**deserialize_backbone(config, custom_objects))
