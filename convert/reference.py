"""The PyTorch reference forward of a fastai LM, built from torch modules only (no fastai).

What fastai's ``SequentialRNN(AWD_LSTM | AWD_QRNN, LinearDecoder)`` computes in eval mode after
``reset()``: every dropout is the identity then, the hidden state starts at zero, and the QRNN's
saved previous input is forgotten. So the forward is embedding -> recurrent layers -> decoder:

* AWD-LSTM layers: ``torch.nn.LSTM`` wrapped in :class:`ulmfit_torch.weight_dropout.WeightDropout`
  (the ``weight_hh_l0_raw`` / ``module.*`` keys of fastai's wrapper);
* AWD-QRNN layers: :func:`ulmfit_torch.qrnn.awd_qrnn_layer` (fastai 2.2.7's modules, keys
  and math, rebuilt in torch);
* the decoder: ``h @ W^T + b`` with ``W`` the embedding (tied) or its own matrix.

The model is built from its :class:`~ulmfit_core.lm_config.LMConfig`. Its state-dict keys are
exactly the fastai keys the reader keeps (:attr:`LMState.tensors
<ulmfit_torch.state_dict.LMState>`, which the mapping table converts too), and it is loaded with
``strict=True`` from those: the reference and the Keras model read the file through the same
reader. Imports neither TensorFlow nor fastai (it also runs in the fastai environment).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ulmfit_core.ids import PAD_ID
from ulmfit_core.lm_config import LMConfig
from ulmfit_torch.qrnn import awd_qrnn_layer
from ulmfit_torch.state_dict import LMState
from ulmfit_torch.weight_dropout import WeightDropout

logger = logging.getLogger(__name__)

__all__ = ["ReferenceLM", "build_reference", "layer_names"]


def layer_names(config: LMConfig) -> list[str]:
    """Names of the compared outputs, in order (the Keras layer names, plus ``logits``)."""
    prefix = "lstm" if config.arch == "awd-lstm" else "qrnn"
    return ["encoder_embedding", *(f"{prefix}_{i}" for i in range(config.n_layers)), "logits"]


class _Encoder(nn.Module):
    """``0.*``: the embedding and the recurrent layers (fastai's ``AWD_LSTM``/``AWD_QRNN``)."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.arch = config.arch
        self.encoder = nn.Embedding(config.vocab_size, config.emb_size, padding_idx=PAD_ID)
        sizes = config.layer_sizes
        rnns: list[nn.Module] = []
        for layer, n_out in enumerate(sizes):
            n_in = config.emb_size if layer == 0 else sizes[layer - 1]
            if config.arch == "awd-lstm":
                lstm = nn.LSTM(n_in, n_out, 1, batch_first=True)
                rnns.append(WeightDropout(lstm, 0.0, layer_names="weight_hh_l0"))
            else:
                rnns.append(awd_qrnn_layer(n_in, n_out, layer, weight_p=0.0))
        self.rnns = nn.ModuleList(rnns)


class _TiedDecoder(nn.Module):
    """``1.decoder`` when tied: only the bias is its own; the matrix is the embedding's."""

    def __init__(self, vocab_size: int, out_bias: bool) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if out_bias else None


class _Decoder(nn.Module):
    """``1.*``: fastai's ``LinearDecoder`` (its output dropout is the identity in eval)."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        if config.tie_weights:
            self.decoder: nn.Module = _TiedDecoder(config.vocab_size, config.out_bias)
        else:
            self.decoder = nn.Linear(config.emb_size, config.vocab_size, bias=config.out_bias)


class ReferenceLM(nn.Module):
    """fastai's LM forward in eval mode after ``reset()``; see the module docstring.

    :meth:`forward` takes token ids ``(batch, seq)`` (unpadded: parity is defined without
    padding) and returns every compared output by name (:func:`layer_names`).
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        self.add_module("0", _Encoder(config))
        self.add_module("1", _Decoder(config))
        self.eval()

    @property
    def body(self) -> _Encoder:
        return self._modules["0"]

    @property
    def head(self) -> _Decoder:
        return self._modules["1"]

    def reset(self) -> None:
        """Forget the QRNN layers' saved previous input (the LSTMs keep no state here)."""
        for rnn in self.body.rnns:
            if hasattr(rnn, "reset"):
                rnn.reset()

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self._encode(ids, keep_all=True)
        decoder = self.head.decoder
        weight = self.body.encoder.weight if self.config.tie_weights else decoder.weight
        last = outputs.pop("output")  # also under the last recurrent layer's name
        outputs["logits"] = F.linear(last, weight, decoder.bias)
        return outputs

    @torch.no_grad()
    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """The encoder output only (the last recurrent layer), ``(batch, seq, emb)``."""
        return self._encode(ids, keep_all=False)["output"]

    def _encode(self, ids: torch.Tensor, keep_all: bool) -> dict[str, torch.Tensor]:
        self.reset()
        names = layer_names(self.config)
        outputs: dict[str, torch.Tensor] = {}
        x = self.body.encoder(ids)
        if keep_all:
            outputs[names[0]] = x
        for name, rnn in zip(names[1:-1], self.body.rnns, strict=True):
            x, _ = rnn(x)  # zero initial state, as after fastai's reset()
            if keep_all:
                outputs[name] = x
        self.reset()
        outputs["output"] = x
        return outputs

    def run(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`forward` on numpy ids, returning float32 numpy arrays."""
        result = self(torch.from_numpy(np.asarray(ids, dtype=np.int64)))
        return {name: value.numpy() for name, value in result.items()}


def build_reference(state: LMState) -> ReferenceLM:
    """A :class:`ReferenceLM` of ``state.config``, loaded strictly, by key, from ``state.tensors``.

    Args:
        state: the read and checked state dict (:func:`ulmfit_torch.state_dict.read_lm_state`).

    Raises:
        RuntimeError: the module's keys differ from the reader's (a bug, not a bad file).
    """
    model = ReferenceLM(state.config)
    keys = list(state.tensors)
    if sorted(model.state_dict()) != sorted(keys):
        raise RuntimeError(
            "the reference model's keys differ from the key table's: "
            f"only in the model {sorted(set(model.state_dict()) - set(keys))}, "
            f"only in the table {sorted(set(keys) - set(model.state_dict()))}"
        )
    weights = {key: value.detach().to(torch.float32) for key, value in state.tensors.items()}
    model.load_state_dict(weights, strict=True)
    model.eval()
    logger.debug("built the PyTorch reference from %d tensors", len(keys))
    return model
