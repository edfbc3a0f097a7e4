"""The QRNN layer (MultiFiT), parallel over time, numerically equal to fastai 2.2.7's.

One matmul computes all gates for the whole sequence; only the element-wise forget-mult
``h_t = f_t*z_t + (1-f_t)*h_{t-1}`` is sequential (:mod:`ulmfit_keras.layers.forget_mult`).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ulmfit_keras.layers.forget_mult import forget_mult, resolve_forget_mult_impl
from ulmfit_keras.layers.initializers import torch_linear_initializer

__all__ = ["QRNNLayer"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class QRNNLayer(keras.layers.Layer):
    """A QRNN layer (Bradbury et al.), computing what fastai 2.2.7's ``QRNNLayer`` computes.

    For input ``x`` ``(batch, time, features)``:

    * window 2: ``s_t = concat([x_t, x_{t-1}])`` (in that order, ``x_{-1} = 0``); window 1: ``x_t``;
    * ``[z, f, o] = split(s @ kernel + bias, 3)``; ``z = tanh``, ``f = sigmoid``, ``o = sigmoid``;
    * ``h_t = f_t*z_t + (1-f_t)*h_{t-1}`` with ``h_{-1} = 0``; output ``o_t * h_t`` (or ``h_t``
      without the output gate).

    Masking (the Keras mask of the input; ``True`` = valid): inputs at masked steps are zeroed
    before the window shift (so a step after padding sees ``x_{t-1} = 0``, as at the start of a
    sequence), ``f`` is set to 0 at masked steps (so ``h`` is carried over them unchanged), and
    outputs at masked steps are 0. Post- and pre-padded sequences therefore give the unpadded
    run's outputs at their valid steps. The output mask is the input mask.

    Regularisation, in training only (neither ever writes a variable): ``weight_p`` drops
    weights of a per-call copy of ``kernel`` (fastai's ``WeightDropout`` on the linear);
    ``zoneout`` multiplies ``f`` by a dropout mask scaled by ``1/(1-zoneout)`` (fastai's).

    Args:
        units: hidden size (output features).
        window: 1 or 2.
        output_gate: use the output gate ``o`` (fastai's AWD-QRNN always does).
        zoneout: zoneout probability on ``f``.
        weight_p: weight-drop probability on ``kernel``.
        forget_mult_impl: ``"sequential"`` or ``"log_depth"``
            (:mod:`~ulmfit_keras.layers.forget_mult`; the former names ``"scan"`` and
            ``"associative"`` are read as these).
        kernel_initializer: defaults to PyTorch ``nn.Linear``'s.
        bias_initializer: defaults to zeros.
        seed: seed of the layer's random generator.

    Variables (``NAME`` = the layer name): ``NAME/kernel`` ``(window*in, n_gates*units)`` = the
    fastai linear's ``weight_raw`` transposed (rows: the ``x_t`` features, then ``x_{t-1}``'s;
    columns: Z, F, O blocks); ``NAME/bias`` ``(n_gates*units,)`` = ``linear.module.bias``.
    """

    def __init__(
        self,
        units: int,
        window: int = 1,
        output_gate: bool = True,
        zoneout: float = 0.0,
        weight_p: float = 0.0,
        forget_mult_impl: str = "sequential",
        kernel_initializer: Any = None,
        bias_initializer: Any = "zeros",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if window not in (1, 2):
            raise ValueError(f"QRNN window must be 1 or 2, got {window}")
        for name, value in (("zoneout", zoneout), ("weight_p", weight_p)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        self.units = int(units)
        self.window = int(window)
        self.output_gate = bool(output_gate)
        self.zoneout = float(zoneout)
        self.weight_p = float(weight_p)
        self.forget_mult_impl = resolve_forget_mult_impl(forget_mult_impl)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or torch_linear_initializer()
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.n_gates = 3 if self.output_gate else 2
        self.supports_masking = True

    def build(self, input_shape) -> None:
        features = input_shape[-1]
        if features is None:
            raise ValueError("QRNNLayer needs a known number of input features")
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.window * features, self.n_gates * self.units),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.n_gates * self.units,), initializer=self.bias_initializer
        )
        self.built = True

    def call(self, inputs, mask=None, training: bool = False):
        x = inputs
        step_mask = None
        if mask is not None:
            step_mask = ops.expand_dims(ops.cast(mask, x.dtype), -1)  # (batch, time, 1)
            x = x * step_mask
        if self.window == 2:
            # x_{t-1}, with zeros (not a pad embedding) before the first step.
            previous = ops.pad(x, [[0, 0], [1, 0], [0, 0]])[:, :-1]
            x = ops.concatenate([x, previous], axis=-1)
        kernel = self.kernel
        if training and self.weight_p > 0.0:
            kernel = keras.random.dropout(kernel, self.weight_p, seed=self.seed_generator)
        gates = ops.split(ops.matmul(x, kernel) + self.bias, self.n_gates, axis=-1)
        z = ops.tanh(gates[0])
        f = ops.sigmoid(gates[1])
        if training and self.zoneout > 0.0:
            f = keras.random.dropout(f, self.zoneout, seed=self.seed_generator)
        if step_mask is not None:
            f = f * step_mask  # f = 0 at masked steps: b = 0, a = 1, the state is carried
        h = forget_mult(z, f, self.forget_mult_impl)
        out = ops.sigmoid(gates[2]) * h if self.output_gate else h
        if step_mask is not None:
            out = out * step_mask
        return out

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "window": self.window,
                "output_gate": self.output_gate,
                "zoneout": self.zoneout,
                "weight_p": self.weight_p,
                "forget_mult_impl": self.forget_mult_impl,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "seed": self.seed,
            }
        )
        return config
