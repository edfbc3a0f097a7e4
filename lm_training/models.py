"""The language models of stage 04: fastai 2.8's AWD-LSTM and our AWD-QRNN, built from an LMConfig.

fastai removed ``AWD_QRNN`` in 2.4. :class:`AWD_QRNN` restores it on top of fastai 2.8's
``AWD_LSTM`` (same embedding, dropouts and hidden-state handling) with the torch-only QRNN of
:mod:`ulmfit_torch.qrnn`, so its state dict has exactly fastai 2.2.7's keys and shapes.

:class:`SafeAWD_LSTM` is fastai 2.8's ``AWD_LSTM`` with one fix: its LSTMs' weight dropout is
:class:`ulmfit_torch.weight_dropout.WeightDropout` (same state-dict keys, same random draws).
fastai's own ``WeightDropout`` breaks at ``weight_p == 0`` (e.g. ``drop_mult=0``): ``F.dropout``
then returns the raw ``Parameter`` itself, which ``setattr`` registers on the LSTM as a new
parameter, and the next ``reset()`` fails with "cannot assign 'torch.FloatTensor' as parameter".
"""

from __future__ import annotations

import logging

import torch
from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_split
from fastai.text.models.core import LinearDecoder, SequentialRNN
from fastai.torch_core import one_param
from torch import nn

from ulmfit_core.lm_config import LMConfig
from ulmfit_torch.qrnn import QRNN, awd_qrnn_layer
from ulmfit_torch.weight_dropout import WeightDropout

logger = logging.getLogger(__name__)

__all__ = [
    "AWD_QRNN",
    "SafeAWD_LSTM",
    "build_encoder",
    "build_language_model",
    "language_model_split",
]


class SafeAWD_LSTM(AWD_LSTM):
    """fastai 2.8's ``AWD_LSTM`` whose weight dropout also works at ``weight_p == 0``."""

    def _one_rnn(self, n_in: int, n_out: int, bidir: bool, weight_p: float, l: int) -> nn.Module:  # noqa: E741, ARG002 - fastai's signature
        rnn = nn.LSTM(n_in, n_out, 1, batch_first=True, bidirectional=bidir)
        return WeightDropout(rnn, weight_p, layer_names="weight_hh_l0")


class AWD_QRNN(AWD_LSTM):
    """AWD-LSTM with QRNN layers instead of LSTMs, as fastai 2.2.7 defined it.

    Each layer's hidden state is a single tensor ``(n_dir, bs, nh)`` (an LSTM's is an ``(h, c)``
    pair). ``reset()`` also forgets each QRNN layer's saved last input step (``save_prev_x``),
    so that a new sequence does not see the previous batch's last token.
    """

    def _one_rnn(self, n_in: int, n_out: int, bidir: bool, weight_p: float, l: int) -> QRNN:  # noqa: E741 - fastai's name
        return awd_qrnn_layer(n_in, n_out, l, weight_p, bidir=bidir)

    def _hidden_size(self, l: int) -> int:  # noqa: E741
        return (self.n_hid if l != self.n_layers - 1 else self.emb_sz) // self.n_dir

    def _one_hidden(self, l: int) -> torch.Tensor:  # noqa: E741
        return one_param(self).new_zeros(self.n_dir, self.bs, self._hidden_size(l))

    def _change_one_hidden(self, l: int, bs: int) -> torch.Tensor:  # noqa: E741
        hidden = self.hidden[l]
        if self.bs < bs:
            extra = hidden.new_zeros(self.n_dir, bs - self.bs, self._hidden_size(l))
            return torch.cat([hidden, extra], dim=1)
        if self.bs > bs:
            return hidden[:, :bs].contiguous()
        return hidden

    def reset(self) -> None:
        """Zero the hidden states and forget every layer's saved previous input."""
        for rnn in self.rnns:
            rnn.reset()  # QRNN.reset clears each QRNNLayer's prev_x
        self.hidden = [self._one_hidden(layer) for layer in range(self.n_layers)]


def build_encoder(cfg: LMConfig) -> AWD_LSTM:
    """The recurrent encoder of ``cfg``: fastai's ``AWD_LSTM`` (as :class:`SafeAWD_LSTM`) or
    :class:`AWD_QRNN`, with ``cfg``'s sizes and dropouts (``output_p`` is the caller's).

    The language model (:func:`build_language_model`) and the text classifier
    (:func:`lm_training.classifier_model.build_text_classifier`) both build theirs here.
    """
    encoder_cls = AWD_QRNN if cfg.arch == "qrnn" else SafeAWD_LSTM
    return encoder_cls(
        cfg.vocab_size,
        cfg.emb_size,
        cfg.hidden_size,
        cfg.n_layers,
        pad_token=cfg.pad_id,
        hidden_p=cfg.hidden_p,
        input_p=cfg.input_p,
        embed_p=cfg.embed_p,
        weight_p=cfg.weight_p,
        bidir=cfg.bidir,
    )


def build_language_model(cfg: LMConfig) -> SequentialRNN:
    """``SequentialRNN(encoder, LinearDecoder)``, as fastai's ``get_language_model`` builds it.

    The encoder comes from :func:`build_encoder`; the decoder's weight is the embedding's when
    ``cfg.tie_weights``.
    """
    encoder = build_encoder(cfg)
    decoder = LinearDecoder(
        cfg.vocab_size,
        cfg.emb_size,
        cfg.output_p,
        tie_encoder=encoder.encoder if cfg.tie_weights else None,
        bias=cfg.out_bias,
    )
    return SequentialRNN(encoder, decoder)


def language_model_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """fastai's layer groups for a language model: one per recurrent layer, then the rest.

    The last group holds the embedding, its dropout and the (tied) decoder, so ``freeze_to(-1)``
    trains only those: ULMFiT's first fine-tuning epoch.
    """
    return list(awd_lstm_lm_split(model))
