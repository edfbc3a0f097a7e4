"""What every task model over a backbone shares: keras-hub's ``Task``, reduced to its config.

A task model is a functional ``keras.Model`` from the backbone's input to its head's output; it
keeps the backbone as ``self.backbone`` and serializes it inside its own config, so a ``.keras``
file holds both and the loaded head shares the loaded backbone's layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

__all__ = ["TaskModel", "deserialize_backbone"]


def deserialize_backbone(config: dict[str, Any], custom_objects) -> dict[str, Any]:
    """A task model's config with its serialized ``backbone`` turned back into a model."""
    config = dict(config)
    if isinstance(config.get("backbone"), Mapping):
        config["backbone"] = keras.layers.deserialize(
            config["backbone"], custom_objects=custom_objects
        )
    return config


class TaskModel(keras.Model):
    """Config plumbing of a functional model over ``self.backbone`` (subclasses add their own
    constructor arguments to :meth:`_task_config`)."""

    def _task_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None):
        return cls(**deserialize_backbone(config, custom_objects))
