"""Build the encoder and its language model from a model config; list their variable paths."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import keras

from ulmfit_core.lm_config import LMConfig
from ulmfit_keras.models.ulmfit_encoder import ULMFiTEncoder, layer_seed
from ulmfit_keras.models.ulmfit_language_model import ULMFiTLanguageModel

logger = logging.getLogger(__name__)

__all__ = ["build_encoder", "variable_paths"]


def build_encoder(
    config: LMConfig | Mapping[str, Any] | Any,
    fixed_seq_len: int | None = None,
    seed: int | None = None,
    qrnn_forget_mult: str = "sequential",
) -> tuple[ULMFiTEncoder, ULMFiTLanguageModel]:
    """Build the encoder and the language model sharing its layers from a model config.

    Args:
        config: an ``LMConfig`` (``EncoderConfig`` is the same class), its dict, a plain dict of
            model fields, or anything with ``to_dict()``; keys as in ``ulmfit_core.lm_config``.
        fixed_seq_len: static input length (``None``: any length, e.g. ragged export).
        seed: base seed of all dropouts (``None``: random).
        qrnn_forget_mult: forget-mult implementation for QRNN layers (``"sequential"`` or
            ``"log_depth"``).

    Returns:
        ``(encoder, lm)``: ids -> hidden states, and ids -> logits.
    """
    spec = LMConfig.from_any(config)
    encoder = ULMFiTEncoder.from_lm_config(
        spec, fixed_seq_len=fixed_seq_len, qrnn_forget_mult=qrnn_forget_mult, seed=seed
    )
    lm = ULMFiTLanguageModel.from_lm_config(encoder, spec, seed=layer_seed(seed, 300))
    logger.debug("built %s encoder with %d weights", spec.arch, len(encoder.weights))
    return encoder, lm


def variable_paths(model: keras.layers.Layer) -> dict[str, tuple[int, ...]]:
    """``{variable.path: shape}`` of every weight of ``model``, in model order.

    These are the targets of the converter's mapping table, e.g.
    ``encoder_embedding/embeddings``, ``lstm_0/lstm_cell/kernel``, ``qrnn_0/kernel``,
    ``lm_head/bias``. Random-generator states (not weights) are not listed.

    Raises:
        ValueError: two weights share a path (the mapping would be ambiguous).
    """
    paths: dict[str, tuple[int, ...]] = {}
    for weight in model.weights:
        if weight.path in paths:
            raise ValueError(f"two weights share the path {weight.path!r}")
        paths[weight.path] = tuple(int(d) for d in weight.shape)
    return paths
