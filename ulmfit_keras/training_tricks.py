"""ULMFiT's fine-tuning tricks for Keras: layer groups, discriminative learning rates, unfreezing.

* :func:`layer_groups` splits a task model into fastai's groups (``awd_lstm_clas_split``):
  the embedding, each recurrent layer, and the head (every layer outside the backbone). Over a
  :class:`~ulmfit_keras.SavedModelEncoder` backbone, whose variables all live in one layer, the
  encoder groups are sets of variables, found by the export's variable names.
* Discriminative learning rates: group ``g`` of ``n`` (0 = embedding) trains at
  ``lr / factor ** (n - 1 - g)`` (ULMFiT: ``factor = 2.6``; the head at ``lr``).
  :func:`discriminative_multipliers` gives ``{variable.path: multiplier}``, and
  :class:`DiscriminativeAdam` / :class:`DiscriminativeAdamW` / :class:`DiscriminativeSGD` apply
  them: the Keras optimizer with ``learning_rate * multiplier`` in each variable's update. Scaling
  the *gradients* instead would be wrong for Adam, which is invariant to gradient scale. Weight
  decay (AdamW) uses the base rate, as Keras applies it outside the update step.
* :class:`GradualUnfreezing`: a callback that trains only the top group in the first epoch and
  unfreezes one more group at the start of each later epoch (ULMFiT section 3.3).

Both work with ``model.fit`` and combine (fastai uses them together).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras

from ulmfit_keras.models import EMBEDDING_NAME, ULMFiTEncoder

logger = logging.getLogger(__name__)

__all__ = [
    "DISCRIMINATIVE_FACTOR",
    "DiscriminativeAdam",
    "DiscriminativeAdamW",
    "DiscriminativeSGD",
    "GradualUnfreezing",
    "LayerGroup",
    "discriminative_multipliers",
    "layer_groups",
]

DISCRIMINATIVE_FACTOR = 2.6


# Variable names inside a SavedModelEncoder: the export's paths with "/" as "_".
_RECURRENT_VARIABLE = re.compile(r"^(lstm|qrnn)_(\d+)_")


@dataclass(frozen=True)
class LayerGroup:
    """A named group of layers (and/or loose variables) that share a learning rate and are
    (un)frozen together. Loose variables are those of a layer that spans several groups, such
    as a SavedModel's."""

    name: str
    layers: tuple[keras.layers.Layer, ...]
    loose_variables: tuple[keras.Variable, ...] = ()

    @property
    def variables(self) -> list[keras.Variable]:
        """All weights of the group, frozen or not (BatchNorm moving statistics included)."""
        layer_weights = [variable for layer in self.layers for variable in layer.weights]
        return layer_weights + list(self.loose_variables)

    def set_trainable(self, trainable: bool) -> None:
        for layer in self.layers:
            layer.trainable = trainable
        for variable in self.loose_variables:
            variable.trainable = trainable


def _saved_model_groups(backbone: keras.Model) -> list[LayerGroup]:
    """Embedding and recurrent-layer groups of a SavedModel backbone, by variable name."""
    embedding: list[keras.Variable] = []
    recurrent: dict[int, list[keras.Variable]] = {}
    names: dict[int, str] = {}
    for variable in backbone.weights:
        match = _RECURRENT_VARIABLE.match(variable.name)
        if variable.name.startswith(EMBEDDING_NAME + "_"):
            embedding.append(variable)
        elif match:
            recurrent.setdefault(int(match[2]), []).append(variable)
            names[int(match[2])] = f"{match[1]}_{match[2]}"
    if not embedding or not recurrent or sorted(recurrent) != list(range(len(recurrent))):
        found = ", ".join(variable.name for variable in backbone.weights) or "none"
        raise ValueError(
            f"backbone {backbone.name!r} is neither a ULMFiTEncoder nor a SavedModel of one "
            f"(variables: {found})"
        )
    groups = [LayerGroup("embedding", (), tuple(embedding))]
    groups += [LayerGroup(names[i], (), tuple(recurrent[i])) for i in sorted(recurrent)]
    return groups


def layer_groups(model: keras.Model, backbone: keras.Model | None = None) -> list[LayerGroup]:
    """fastai's layer groups of a task model, bottom to top: embedding, recurrent layers, head.

    Args:
        model: a task model over an encoder (e.g. :class:`~ulmfit_keras.heads_tasks.
            ULMFiTClassifier`).
        backbone: its encoder (a :class:`~ulmfit_keras.ULMFiTEncoder`, or a model over a
            :class:`~ulmfit_keras.SavedModelEncoder`); defaults to ``model.backbone``.

    Raises:
        ValueError: no backbone, a backbone of neither kind, or a model without head weights.
    """
    backbone = backbone if backbone is not None else getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError("layer_groups needs a task model with a backbone (or pass backbone=)")
    if isinstance(backbone, ULMFiTEncoder):
        groups = [LayerGroup("embedding", (backbone.token_embedding,))]
        groups += [LayerGroup(layer.name, (layer,)) for layer in backbone.recurrent_layers]
    else:
        groups = _saved_model_groups(backbone)
    in_backbone = {id(layer) for layer in backbone.layers} | {id(backbone)}
    head = tuple(layer for layer in model.layers if id(layer) not in in_backbone and layer.weights)
    if not head:
        raise ValueError(f"model {model.name!r} has no head layers outside its backbone")
    groups.append(LayerGroup("head", head))
    return groups


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


class GradualUnfreezing(keras.callbacks.Callback):
    """Train the top layer group in epoch 0, then unfreeze one more group each epoch.

    At the start of epoch ``e`` the top ``e + 1`` groups are trainable and the rest frozen
    (``layer.trainable``); the train function is rebuilt so the change takes effect. The
    optimizer must know every variable, so it is built with all of them before anything is
    frozen (``model.fit`` does this when the model starts out fully trainable). The model is
    left as the last epoch set it.

    Args:
        groups: from :func:`layer_groups`, bottom to top.
        epochs_per_group: epochs between two unfreezings (ULMFiT: 1).
    """

    def __init__(self, groups: list[LayerGroup], epochs_per_group: int = 1) -> None:
        super().__init__()
        if not groups:
            raise ValueError("GradualUnfreezing needs at least one layer group")
        if epochs_per_group < 1:
            raise ValueError(f"epochs_per_group must be at least 1, got {epochs_per_group}")
        self.groups = list(groups)
        self.epochs_per_group = int(epochs_per_group)
        self.num_trainable: int | None = None

    def trainable_groups(self, epoch: int) -> int:
        """How many groups (counted from the top) train in ``epoch`` (0-based)."""
        return min(len(self.groups), 1 + epoch // self.epochs_per_group)

    def on_train_begin(self, logs=None) -> None:
        del logs
        optimizer = self.model.optimizer
        if not optimizer.built:
            for group in self.groups:
                group.set_trainable(True)
            optimizer.build(self.model.trainable_variables)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        del logs
        count = self.trainable_groups(epoch)
        if count == self.num_trainable:
            return
        first_trainable = len(self.groups) - count
        for index, group in enumerate(self.groups):
            group.set_trainable(index >= first_trainable)
        self.num_trainable = count
        # The compiled train step captured the previous trainable variables: retrace it.
        self.model.make_train_function(force=True)
        logger.info(
            "epoch %d: training groups %s",
            epoch,
            [group.name for group in self.groups[first_trainable:]],
        )
