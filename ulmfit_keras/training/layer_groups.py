"""fastai's layer groups of a task model (``awd_lstm_clas_split``): embedding, RNNs, head.

Over a :class:`~ulmfit_keras.SavedModelEncoder` backbone, whose variables all live in one layer,
the encoder groups are sets of variables, found by the export's variable names. Discriminative
learning rates (:mod:`ulmfit_keras.training.discriminative`) and gradual unfreezing
(:mod:`ulmfit_keras.training.unfreezing`) work on these groups.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import keras

from ulmfit_keras.models.ulmfit_encoder import EMBEDDING_NAME, ULMFiTEncoder

logger = logging.getLogger(__name__)

__all__ = ["LayerGroup", "layer_groups"]


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
        model: a task model over an encoder (e.g. :class:`~ulmfit_keras.ULMFiTClassifier`).
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
