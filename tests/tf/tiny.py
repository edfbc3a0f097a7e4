"""The tiny AWD-LSTM encoder the downstream-task tests train (fast on 2 CPU cores)."""

from __future__ import annotations

from typing import Any

import keras

import ulmfit_keras as uk


def tiny_config(vocab_size: int) -> dict[str, Any]:
    """A model config as stage 04 writes it, for a 2-layer AWD-LSTM of 16/24 units."""
    return {
        "arch": "awd-lstm",
        "vocab_size": vocab_size,
        "emb_size": 16,
        "hidden_size": 24,
        "n_layers": 2,
        "pad_id": 1,
        "input_p": 0.1,
        "weight_p": 0.1,
        "embed_p": 0.05,
        "hidden_p": 0.1,
        "output_p": 0.1,
        "windows": None,
        "tie_weights": True,
        "out_bias": True,
        "bidir": False,
    }


def tiny_encoder(vocab_size: int, seed: int = 0) -> uk.ULMFiTEncoder:
    """A freshly initialised tiny encoder, the same for the same seed."""
    keras.utils.set_random_seed(seed)
    encoder, _ = uk.build_encoder(tiny_config(vocab_size), seed=seed)
    return encoder
