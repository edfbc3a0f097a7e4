"""Initializers matching PyTorch's defaults, for layers whose weights fastai initialises."""

from __future__ import annotations

import keras

__all__ = ["torch_linear_initializer"]


def torch_linear_initializer() -> keras.initializers.Initializer:
    """PyTorch ``nn.Linear``'s default kernel init: uniform in ``±1/sqrt(fan_in)``."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")
