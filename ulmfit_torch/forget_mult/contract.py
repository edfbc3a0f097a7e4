"""What every forget-mult implementation shares: its signature, shape checks and dtype rules.

All implementations take batch-first ``(batch, time, hidden)`` gates ``z`` and ``f`` and an
optional initial state ``h0`` of ``(batch, hidden)``, and return every hidden state of
``h_t = f_t*z_t + (1-f_t)*h_{t-1}``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["LOW_PRECISION", "ForgetMult", "check_shapes", "common_dtype", "float32_math"]

ForgetMult = Callable[[Tensor, Tensor, Tensor | None], Tensor]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_shapes(z: Tensor, f: Tensor, h0: Tensor | None) -> None:
    if z.dim() != 3 or z.shape != f.shape:
        raise ValueError(
            f"forget-mult needs z and f of the same (batch, time, hidden) shape, "
            f"got {tuple(z.shape)} and {tuple(f.shape)}"
        )
    if h0 is not None and h0.shape != (z.shape[0], z.shape[2]):
        raise ValueError(
            f"h0 must be (batch, hidden) = {(z.shape[0], z.shape[2])}, got {tuple(h0.shape)}"
        )


def common_dtype(z: Tensor, f: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Bring z, f (and h0) to one dtype so that the ``out=``/in-place kernels below accept them."""
    dtype = torch.promote_types(z.dtype, f.dtype)
    h0 = None if h0 is None else h0.to(dtype)
    return z.to(dtype), f.to(dtype), h0


def float32_math(fn: ForgetMult) -> ForgetMult:
    """Run ``fn`` in float32 for half/bfloat16 inputs and cast the result back (autograd-safe)."""

    @functools.wraps(fn)
    def wrapper(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
        check_shapes(z, f, h0)
        z, f, h0 = common_dtype(z, f, h0)
        if z.dtype not in LOW_PRECISION:
            return fn(z, f, h0)
        h0_32 = None if h0 is None else h0.float()
        return fn(z.float(), f.float(), h0_32).to(z.dtype)

    return wrapper
