"""AWD weight-drop as a Keras callback, for recurrent weights whose layer cannot drop them itself.

The encoders this package builds drop weights inside the layer (:class:`~ulmfit_keras.
WeightDropLSTM`, :class:`~ulmfit_keras.QRNNLayer`), which gives fastai's gradients exactly and
keeps the cuDNN LSTM kernel. Two kinds of model cannot do that: a plain ``keras.layers.LSTM``
(someone else's model, or one kept plain so that Keras picks cuDNN: that needs ``dropout=0``,
``recurrent_dropout=0`` and right-padded masks, which weight-drop does not touch) and a
fine-tuned :class:`~ulmfit_keras.SavedModelEncoder`, whose graph was exported for inference.
:class:`WeightDropCallback` drops their weights from outside, around each training step:

* before the step it keeps the raw value ``W`` and assigns ``W * keep / (1 - p)`` (a fresh
  Bernoulli ``keep`` mask per step, like fastai's ``WeightDropout``), so the forward pass and
  the gradient see the dropped weight;
* after the step the optimizer has moved the dropped weight by ``delta``; the callback assigns
  ``W + keep * delta``: the raw weight takes the step on the kept entries, dropped entries stay.

Between steps, and so in validation, prediction and saving, the variable holds the raw weight.
With plain SGD the raw weight moves by fastai's step times ``1 - p``; with Adam, whose step size
does not depend on the gradient's scale, by a step of fastai's size, but Adam's moments also see
the gradient at the dropped entries (fastai's see zero there). The in-layer weight-drop has
neither difference; use this callback where the layer cannot be replaced.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import keras
from keras import ops

from ulmfit_keras.layers.qrnn import QRNNLayer
from ulmfit_keras.layers.weight_drop_lstm import WeightDropLSTM

logger = logging.getLogger(__name__)

__all__ = ["WeightDropCallback", "weight_drop_variables"]

# fastai's AWD-LSTM drops each LSTM's hidden-to-hidden weight; AWD-QRNN the QRNN's linear
# weight. Matched on Keras paths and on a SavedModelEncoder's variable names ("/" as "_").
_WEIGHT_DROP_TARGET = re.compile(r"(recurrent_kernel|qrnn_\d+[/_]kernel)$")


def _walk_layers(layer: keras.layers.Layer):
    yield layer
    for sublayer in getattr(layer, "layers", ()):
        yield from _walk_layers(sublayer)


def weight_drop_variables(model: keras.Model) -> list[keras.Variable]:
    """The weights AWD weight-drop applies to: LSTM recurrent kernels and QRNN kernels.

    Raises:
        ValueError: the model holds a layer that already drops weights itself
            (``weight_p > 0``): dropping twice is not AWD.
    """
    for layer in _walk_layers(model):
        if isinstance(layer, WeightDropLSTM | QRNNLayer) and layer.weight_p > 0:
            raise ValueError(
                f"layer {layer.name!r} already drops weights (weight_p={layer.weight_p}); "
                "build it with weight_p=0 to use WeightDropCallback"
            )
    return [
        variable
        for variable in model.weights
        if _WEIGHT_DROP_TARGET.search(variable.path) or _WEIGHT_DROP_TARGET.search(variable.name)
    ]


class WeightDropCallback(keras.callbacks.Callback):
    """AWD weight-drop on ``variables`` during ``fit`` (module docstring: how and how exactly).

    Args:
        variables: the weights to drop, e.g. :func:`weight_drop_variables` of the model.
        weight_p: probability of dropping each entry in a training step.
        seed: seed of the masks (``None``: random).
    """

    def __init__(
        self, variables: Sequence[keras.Variable], weight_p: float, seed: int | None = None
    ) -> None:
        super().__init__()
        if not 0.0 < weight_p < 1.0:
            raise ValueError(f"weight_p must be in (0, 1), got {weight_p}")
        if not variables:
            raise ValueError("WeightDropCallback needs at least one variable to drop")
        self.variables = list(variables)
        self.weight_p = float(weight_p)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Per variable during a step: (raw value, keep mask, dropped value).
        self._pending: list[tuple] = []

    def on_train_begin(self, logs=None) -> None:
        del logs
        logger.info(
            "AWD weight-drop callback: p=%.2f on %s",
            self.weight_p,
            ", ".join(variable.path for variable in self.variables),
        )

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        del batch, logs
        self._pending = []
        for variable in self.variables:
            raw = ops.copy(variable.value)
            keep = ops.cast(
                keras.random.uniform(variable.shape, seed=self.seed_generator) >= self.weight_p,
                variable.dtype,
            )
            dropped = raw * keep / (1.0 - self.weight_p)
            variable.assign(dropped)
            self._pending.append((raw, keep, dropped))

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        del batch, logs
        for variable, (raw, keep, dropped) in zip(self.variables, self._pending, strict=True):
            variable.assign(raw + keep * (variable.value - dropped))
        self._pending = []
