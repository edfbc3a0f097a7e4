"""QRNN layers reproducing fastai 2.2.7's AWD-QRNN, with torch as the only dependency.

fastai removed its QRNN in 2.4. This module rebuilds it so that 2.2.7 checkpoints load unchanged
(same state-dict keys and shapes), the math is the same, and nothing is compiled at import: fastai
built a C++/CUDA extension at import, the most common failure its users hit. The converter's
verification imports this file from the TensorFlow environment, which has torch but not fastai,
so fastai must never be imported here.

A QRNN layer runs one matmul over the whole sequence (``Linear`` on ``[x_t, x_{t-1}]`` for
window 2), splits it into gates Z, F, O (z = tanh, f = sigmoid, o = sigmoid) and runs only the
element-wise "forget-mult" sequentially over time::

    h_t = f_t * z_t + (1 - f_t) * h_{t-1}        (h_{-1} = given hidden, or 0)
    output_t = o_t * h_t

The forget-mult implementations and their dispatch on device are in
:mod:`ulmfit_torch.forget_mult`; the weight dropout on the linear is
:class:`ulmfit_torch.weight_dropout.WeightDropout`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulmfit_torch.forget_mult import forget_mult
from ulmfit_torch.weight_dropout import WeightDropout

__all__ = ["QRNN", "QRNNLayer", "awd_qrnn_layer"]


class QRNNLayer(nn.Module):
    """One QRNN layer, numerically and state-dict compatible with fastai 2.2.7's ``QRNNLayer``.

    Args:
        input_size: features of the input.
        hidden_size: features of the output (defaults to ``input_size``).
        save_prev_x: with ``window=2``, keep the last input step so that the next call continues
            the sequence; call :meth:`reset` at the start of a new one.
        zoneout: during training, multiply the forget gate by a dropout mask of this probability,
            scaled by ``1/(1-zoneout)`` like fastai's ``dropout_mask``.
        window: 1, or 2 to feed ``[x_t, x_{t-1}]`` (in that order) to the linear.
        output_gate: multiply the hidden states by ``sigmoid(o)``.
        batch_first: inputs and outputs are ``(batch, time, features)``, else time first.
        backward: run right to left (used by the bidirectional :class:`QRNN`).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int | None = None,
        save_prev_x: bool = False,
        zoneout: float = 0.0,
        window: int = 1,
        output_gate: bool = True,
        batch_first: bool = True,
        backward: bool = False,
    ) -> None:
        super().__init__()
        if window not in (1, 2):
            raise ValueError(f"QRNN window must be 1 or 2, got {window}")
        hidden_size = input_size if hidden_size is None else hidden_size
        self.input_size, self.hidden_size = input_size, hidden_size
        self.save_prev_x, self.zoneout, self.window = save_prev_x, zoneout, window
        self.output_gate, self.batch_first, self.backward = output_gate, batch_first, backward
        n_gates = 3 if output_gate else 2
        # One matmul over the whole sequence for all gates: the only sequential part is forget-mult.
        self.linear = nn.Linear(window * input_size, n_gates * hidden_size)
        self.prev_x: Tensor | None = None  # (1, batch, input_size): the step before the next call

    def reset(self) -> None:
        """Forget the saved input step: the next call starts a new sequence."""
        self.prev_x = None

    def forward(self, inp: Tensor, hid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the layer.

        Args:
            inp: ``(batch, time, input_size)`` (or time first when ``batch_first=False``).
            hid: initial hidden state ``(batch, hidden_size)``, or ``None`` for zeros.

        Returns:
            The output sequence in the layout of ``inp`` and the last hidden state
            ``(batch, hidden_size)`` (the first one when ``backward``). The work is done time
            major, so a batch-first output is a transposed view of time-major storage: stacked
            layers then need no copies, and each forget-mult step is one contiguous block.
        """
        x = inp.transpose(0, 1) if self.batch_first else inp  # (time, batch, features)
        y = self.linear(self._source(x))
        gates = y.chunk(3 if self.output_gate else 2, dim=2)
        z, f = gates[0].tanh(), gates[1].sigmoid()
        z, f = z.transpose(0, 1), f.transpose(0, 1)  # batch-first views for forget_mult
        if self.zoneout and self.training:
            # fastai's dropout_mask(f, f.size(), p): drawn batch first, so a seed gives its mask.
            keep = f.new_empty(f.shape).bernoulli_(1 - self.zoneout).div_(1 - self.zoneout)
            f = f * keep
        if self.backward:
            c = forget_mult(z.flip(1), f.flip(1), hid).flip(1)
        else:
            c = forget_mult(z, f, hid)
        out = torch.sigmoid(gates[2]).transpose(0, 1) * c if self.output_gate else c
        if self.window > 1 and self.save_prev_x:
            edge = x[:1] if self.backward else x[-1:]
            self.prev_x = edge.detach().clone()  # a copy: do not keep the whole input alive
        last = c[:, 0] if self.backward else c[:, -1]
        return (out if self.batch_first else out.transpose(0, 1)), last

    def _source(self, x: Tensor) -> Tensor:
        """Time-major ``x``, or ``[x_t, x_{t-1}]`` (``[x_t, x_{t+1}]`` backwards) for window 2."""
        if self.window == 1:
            return x
        batch = x.shape[1]
        prev = torch.zeros_like(x[:1]) if self.prev_x is None else self.prev_x.to(x)
        # The batch size may change between calls (fastai's last batch): pad with zeros or cut.
        if prev.shape[1] < batch:
            prev = torch.cat([prev, torch.zeros_like(x[:1, prev.shape[1] :])], dim=1)
        prev = prev[:, :batch]
        if self.backward:
            shifted = torch.cat([x[1:], prev], dim=0)
        else:
            shifted = torch.cat([prev, x[:-1]], dim=0)
        return torch.cat([x, shifted], dim=2)

    def extra_repr(self) -> str:
        return (
            f"window={self.window}, save_prev_x={self.save_prev_x}, zoneout={self.zoneout}, "
            f"output_gate={self.output_gate}, batch_first={self.batch_first}, "
            f"backward={self.backward}"
        )


class QRNN(nn.Module):
    """A stack of :class:`QRNNLayer`, compatible with fastai 2.2.7's ``QRNN``.

    The windows default to 2 for the first layer and 1 after it. With ``bidirectional``, a second
    stack ``layers_bwd`` runs right to left on its own outputs and the two directions are
    concatenated at the end, as in fastai 2.2.7. Its hidden states are then ordered
    ``[fwd_0, bwd_0, fwd_1, bwd_1, ...]``.

    ``dropout`` is applied between layers in training mode. fastai 2.2.7 computed that dropout
    but then discarded it, because it assigned the result to a loop variable. This only matters for
    ``n_layers > 1`` with ``dropout > 0``, which AWD-QRNN never uses (one layer per ``QRNN``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        n_layers: int = 1,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        save_prev_x: bool = False,
        zoneout: float = 0.0,
        window: int | None = None,
        output_gate: bool = True,
    ) -> None:
        super().__init__()
        if save_prev_x and bidirectional:
            raise ValueError("save_prev_x cannot be combined with bidirectional")
        common = dict(batch_first=batch_first, zoneout=zoneout, output_gate=output_gate)

        def layer_window(layer: int) -> int:
            return (2 if layer == 0 else 1) if window is None else window

        def layer_input(layer: int) -> int:
            return input_size if layer == 0 else hidden_size

        self.layers = nn.ModuleList(
            QRNNLayer(
                layer_input(i),
                hidden_size,
                save_prev_x=save_prev_x,
                window=layer_window(i),
                **common,
            )
            for i in range(n_layers)
        )
        if bidirectional:
            self.layers_bwd = nn.ModuleList(
                QRNNLayer(
                    layer_input(i), hidden_size, backward=True, window=layer_window(i), **common
                )
                for i in range(n_layers)
            )
        self.n_layers, self.batch_first = n_layers, batch_first
        self.dropout, self.bidirectional = dropout, bidirectional

    def reset(self) -> None:
        """Start a new sequence in every layer."""
        for layer in self.layers:
            layer.reset()
        if self.bidirectional:
            for layer in self.layers_bwd:
                layer.reset()

    def forward(self, inp: Tensor, hid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the stack.

        Args:
            inp: the input sequence.
            hid: initial hidden states ``(n_layers * n_directions, batch, hidden)`` or ``None``.

        Returns:
            The last layer's output and the stacked last hidden states
            ``(n_layers * n_directions, batch, hidden)``.
        """
        n_dir = 2 if self.bidirectional else 1
        new_hid = []
        inp_bwd = inp
        for i, layer in enumerate(self.layers):
            inp, h = layer(inp, None if hid is None else hid[n_dir * i])
            new_hid.append(h)
            if self.bidirectional:
                h_in = None if hid is None else hid[2 * i + 1]
                inp_bwd, h_bwd = self.layers_bwd[i](inp_bwd, h_in)
                new_hid.append(h_bwd)
            if self.dropout and i < self.n_layers - 1:
                inp = F.dropout(inp, p=self.dropout, training=self.training)
                if self.bidirectional:
                    inp_bwd = F.dropout(inp_bwd, p=self.dropout, training=self.training)
        if self.bidirectional:
            inp = torch.cat([inp, inp_bwd], dim=2)
        return inp, torch.stack(new_hid, dim=0)


# ---------------------------------------------------------------------------------------------
# AWD-QRNN building blocks
# ---------------------------------------------------------------------------------------------


def awd_qrnn_layer(
    n_in: int, n_out: int, layer_index: int, weight_p: float, bidir: bool = False
) -> QRNN:
    """What fastai 2.2.7's ``AWD_QRNN._one_rnn`` put in ``rnns[layer_index]``.

    A one-layer :class:`QRNN` (window 2 for layer 0, else 1; output gate; no zoneout;
    ``save_prev_x`` unless bidirectional) whose forward linear is wrapped in
    :class:`WeightDropout`, giving the keys ``layers.0.linear.weight_raw`` and
    ``layers.0.linear.module.bias``. As in fastai, the backward direction's linear is not wrapped.
    ``n_out`` is per direction (fastai passes ``size // n_dir``).
    """
    rnn = QRNN(
        n_in,
        n_out,
        1,
        save_prev_x=not bidir,
        zoneout=0.0,
        window=2 if layer_index == 0 else 1,
        output_gate=True,
        bidirectional=bidir,
    )
    rnn.layers[0].linear = WeightDropout(rnn.layers[0].linear, weight_p, layer_names="weight")
    return rnn
