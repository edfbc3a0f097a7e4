"""AWD-LSTM's recurrent layer: a Keras ``LSTM`` with weight-drop on the recurrent kernel.

Design of the weight drop (AWD's DropConnect on ``W_hh``)
--------------------------------------------------------
fastai's ``WeightDropout`` keeps the trained weight as ``weight_hh_l0_raw`` and hands the LSTM a
dropped *copy* for each forward pass; the trained weight is never written. Here the same is done
inside the layer. :meth:`WeightDropLSTM.inner_loop` (the hook through which ``keras.layers.LSTM``
runs its recurrence) reads the three kernels once per call, before the time loop, and in training
replaces the recurrent kernel by ``dropout(recurrent_kernel)`` (one mask per call, scaled by
``1/(1-weight_p)`` like ``F.dropout``). The recurrence then runs on those tensors:

* on a GPU through the same fused cuDNN kernel as Keras' ``LSTM`` (``keras.src.backend.lstm``
  takes the kernels as arguments), in training too; cuDNN needs ``dropout=0``,
  ``recurrent_dropout=0`` and right-padded masks, as in Keras;
* elsewhere through Keras' own masked time loop (``keras.src.backend.rnn``, the one ``LSTM`` falls
  back to), with the input projection ``x @ kernel + bias`` done for the whole sequence in one
  matmul before the loop and only ``h @ recurrent_kernel`` per step.

Gradients of the dropped copy flow back to the variable, as in fastai. Nothing is assigned: no
state to restore after a step, no callback. Reading the kernels *outside* the loop also matters
for export: a SavedModel whose while loop captures variables (what ``keras.layers.LSTM`` does on
CPU) cannot be fine-tuned through ``keras.layers.TFSMLayer`` once eager and graph gradients mix
("Tried to take gradients ... of a variable without handle data"); with this layer it can.
The ``keras.src.backend`` functions are the ones ``keras.layers.LSTM`` itself calls (Keras is
pinned).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops
from keras.src import backend as keras_backend

__all__ = ["WeightDropLSTM"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class WeightDropLSTM(keras.layers.LSTM):
    """``keras.layers.LSTM`` with AWD weight-drop on ``recurrent_kernel`` during training.

    Defaults differ from ``keras.layers.LSTM`` where AWD-LSTM needs it:
    ``return_sequences=True`` and ``zero_output_for_mask=True`` (outputs at masked timesteps are
    zeros; the states are carried over them unchanged, so padding never changes the state that a
    later valid timestep sees).

    Math (= PyTorch ``nn.LSTM``): gates ``x_t @ kernel + bias + h_{t-1} @ recurrent_kernel``
    split into i, f, c, o (PyTorch's i, f, g, o); ``c_t = f*c_{t-1} + i*tanh(g)``,
    ``h_t = o*tanh(c_t)``; the state starts at zero.

    Args:
        units: output size.
        weight_p: probability of zeroing each recurrent-kernel weight in training.
        weight_drop_seed: seed of the weight-drop random generator.
        **kwargs: ``keras.layers.LSTM`` arguments. ``dropout`` and ``recurrent_dropout`` are not
            supported (AWD-LSTM uses :class:`~ulmfit_keras.RNNDropout` layers instead).

    Variables (``NAME`` = the layer name): ``NAME/lstm_cell/kernel`` ``(in, 4*units)`` =
    ``W_ih^T``; ``NAME/lstm_cell/recurrent_kernel`` ``(units, 4*units)`` = ``W_hh^T``;
    ``NAME/lstm_cell/bias`` ``(4*units,)`` = ``b_ih + b_hh``.
    """

    def __init__(
        self,
        units: int,
        weight_p: float = 0.0,
        weight_drop_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("return_sequences", True)
        kwargs.setdefault("zero_output_for_mask", True)
        super().__init__(units, **kwargs)
        if not 0.0 <= weight_p < 1.0:
            raise ValueError(f"weight_p must be in [0, 1), got {weight_p}")
        if self.dropout or self.recurrent_dropout:
            raise ValueError(
                "WeightDropLSTM does not support dropout or recurrent_dropout: "
                "use RNNDropout layers and weight_p"
            )
        self.weight_p = float(weight_p)
        self.weight_drop_seed = weight_drop_seed
        self.weight_drop_seed_generator = keras.random.SeedGenerator(weight_drop_seed)

    def recurrent_kernel_for_call(self, training: bool = False):
        """The recurrent kernel used by one call, as a tensor read before the time loop.

        In training with ``weight_p > 0``: a dropped copy (one mask for the whole call); else
        the variable's value. The variable itself is never written.
        """
        if training and self.weight_p > 0.0:
            return keras.random.dropout(
                self.cell.recurrent_kernel, self.weight_p, seed=self.weight_drop_seed_generator
            )
        return ops.copy(self.cell.recurrent_kernel)

    def inner_loop(self, sequences, initial_state, mask, training: bool = False):
        if isinstance(mask, list | tuple):
            mask = mask[0]
        cell = self.cell
        kernel = ops.copy(cell.kernel)
        bias = ops.copy(cell.bias) if cell.use_bias else None
        recurrent_kernel = self.recurrent_kernel_for_call(training)
        if self.use_cudnn in ("auto", True):
            try:
                out = keras_backend.lstm(
                    sequences,
                    initial_state[0],
                    initial_state[1],
                    mask,
                    kernel=kernel,
                    recurrent_kernel=recurrent_kernel,
                    bias=bias,
                    activation=cell.activation,
                    recurrent_activation=cell.recurrent_activation,
                    return_sequences=self.return_sequences,
                    go_backwards=self.go_backwards,
                    unroll=self.unroll,
                )
                if keras_backend.backend() == "tensorflow":
                    self.supports_jit = False  # cuDNN ops are not XLA-compatible (as in Keras)
                return out
            except NotImplementedError:
                pass  # no GPU or unsupported arguments: the time loop below
        if self.use_cudnn is True:
            raise ValueError("use_cudnn=True, but cuDNN cannot run this layer here")
        return self._time_loop(sequences, initial_state, mask, kernel, recurrent_kernel, bias)

    def _time_loop(self, sequences, initial_state, mask, kernel, recurrent_kernel, bias):
        """Keras' masked time loop on given kernel tensors (the input projection done first)."""
        cell = self.cell
        projected = ops.matmul(sequences, kernel)
        if bias is not None:
            projected = projected + bias

        def step(z_x, states):
            h_prev, c_prev = states
            z = z_x + ops.matmul(h_prev, recurrent_kernel)
            z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
            i = cell.recurrent_activation(z_i)
            f = cell.recurrent_activation(z_f)
            c = f * c_prev + i * cell.activation(z_c)
            o = cell.recurrent_activation(z_o)
            h = o * cell.activation(c)
            return h, [h, c]

        return keras_backend.rnn(
            step,
            projected,
            list(initial_state),
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"weight_p": self.weight_p, "weight_drop_seed": self.weight_drop_seed})
        return config
