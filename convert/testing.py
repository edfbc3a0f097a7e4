"""Random fastai-layout language models built with torch only, for tests, benchmarks and demos.

fastai is not available in the TensorFlow environment, so these state dicts are made from the
same torch modules fastai uses (``nn.Embedding``, ``nn.LSTM`` in
:class:`ulmfit_torch.weight_dropout.WeightDropout`, :func:`ulmfit_torch.qrnn.awd_qrnn_layer`),
which gives fastai's key names and shapes, and laid out as fastai's
``SequentialRNN(encoder, LinearDecoder)`` saves them: the tied decoder and the embedding
dropout's ``emb`` listed under their own keys with the embedding's tensor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ulmfit_core.lm_config import LMConfig, sidecar_path
from ulmfit_torch.checkpoint_io import save_pth
from ulmfit_torch.qrnn import awd_qrnn_layer
from ulmfit_torch.weight_dropout import WeightDropout

__all__ = ["fastai_lm_state_dict", "save_learner_file"]


def fastai_lm_state_dict(
    arch: str,
    vocab_size: int,
    emb_size: int,
    hidden_size: int,
    n_layers: int,
    *,
    tie_weights: bool = True,
    out_bias: bool = True,
    dropped_copies: bool = False,
    init_range: float | None = 0.5,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random AWD-LSTM / AWD-QRNN LM state dict with fastai's keys, in fastai's order.

    Args:
        arch: ``"awd-lstm"`` (fastai 2.8 keys) or ``"qrnn"`` (fastai 2.2.7 keys).
        vocab_size, emb_size, hidden_size, n_layers: sizes (the last layer has ``emb_size``).
        tie_weights: ``1.decoder.weight`` is the embedding's tensor (else its own).
        out_bias: include ``1.decoder.bias``.
        dropped_copies: add the stale ``WeightDropout`` copies older fastai files hold
            (``module.weight_hh_l0`` / ``layers.0.linear.module.weight``), filled with other
            values: the converter must ignore them.
        init_range: every tensor uniform in ``±init_range`` (large values exercise the
            saturating parts of the gates); ``None``: torch's default initialisation with a
            fastai-like embedding (uniform ``±0.1``).
        seed: random seed.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the modules' own default initialisation

    def uniform(shape: tuple[int, ...], scale: float) -> torch.Tensor:
        return (torch.rand(shape, generator=generator) * 2 - 1) * scale

    embedding = uniform((vocab_size, emb_size), 0.1 if init_range is None else init_range)
    state: dict[str, torch.Tensor] = {"0.encoder.weight": embedding}
    state["0.encoder_dp.emb.weight"] = embedding
    sizes = [hidden_size] * (n_layers - 1) + [emb_size]
    for layer, n_out in enumerate(sizes):
        n_in = emb_size if layer == 0 else hidden_size
        if arch == "awd-lstm":
            module: nn.Module = WeightDropout(
                nn.LSTM(n_in, n_out, 1, batch_first=True), 0.5, layer_names="weight_hh_l0"
            )
            dropped = "module.weight_hh_l0"
        elif arch == "qrnn":
            module = awd_qrnn_layer(n_in, n_out, layer, weight_p=0.1)
            dropped = "layers.0.linear.module.weight"
        else:
            raise ValueError(f"unknown arch {arch!r}")
        for key, value in module.state_dict().items():
            value = value.detach().clone()
            if init_range is not None:
                value = uniform(tuple(value.shape), init_range)
            state[f"0.rnns.{layer}.{key}"] = value
        if dropped_copies:
            raw = "weight_hh_l0_raw" if arch == "awd-lstm" else "layers.0.linear.weight_raw"
            shape = tuple(state[f"0.rnns.{layer}.{raw}"].shape)
            state[f"0.rnns.{layer}.{dropped}"] = uniform(shape, 1.0)
    if tie_weights:
        state["1.decoder.weight"] = embedding
    else:
        state["1.decoder.weight"] = uniform(
            (vocab_size, emb_size), 0.1 if init_range is None else init_range
        )
    if out_bias:
        state["1.decoder.bias"] = uniform((vocab_size,), 0.1 if init_range is None else init_range)
    return state


def save_learner_file(
    path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    config: LMConfig | None = None,
    bare: bool = False,
) -> Path:
    """Save as fastai's ``Learner.save`` does (``{'model', 'opt'}``) or as a bare state dict.

    The ``opt`` entry mimics fastai's optimizer state with plain Python values (a real one,
    with fastcore's ``L`` and numpy scalars, needs fastai to write). With ``config``, its
    ``.json`` sidecar is written next to the file.
    """
    path = Path(path)
    opt: dict[str, Any] = {
        "state": [{} for _ in state_dict],
        "hypers": [{"lr": 1e-3, "mom": 0.9, "sqr_mom": 0.99, "eps": 1e-7, "wd": 0.01}],
    }
    save_pth(state_dict if bare else {"model": state_dict, "opt": opt}, path)
    if config is not None:
        config.save(sidecar_path(path))
    return path
