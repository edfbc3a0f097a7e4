"""Gradual unfreezing (ULMFiT section 3.3) as a Keras callback over fastai's layer groups."""

from __future__ import annotations

import logging

import keras

from ulmfit_keras.training.layer_groups import LayerGroup

logger = logging.getLogger(__name__)

__all__ = ["GradualUnfreezing"]


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
