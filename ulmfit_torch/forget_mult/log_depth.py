"""Forget-mult as a log-depth Hillis-Steele scan in plain torch: the CUDA fallback.

Used on CUDA when Triton is missing or fails its first-use self-check: few kernel launches,
stable (nothing is divided). On CPU it is slower than the time loop of
:mod:`ulmfit_torch.forget_mult.sequential` (log2(T) full passes over memory).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ulmfit_torch.forget_mult.contract import float32_math

__all__ = ["forget_mult_scan"]


def _linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """``h_t = a_t*h_{t-1} + b_t`` along dim 1 with ``h_{-1} = 0``, in ceil(log2(T)) steps.

    Hillis-Steele: after the step of width ``s``, position ``t`` holds the composition of the
    ``2s`` maps ending at ``t``. Products of ``a`` may underflow to 0, which is their exact limit;
    nothing is ever divided, so the scan is as stable as the loop.
    """
    seq_len = a.shape[1]
    step = 1
    while step < seq_len:
        b = torch.cat([b[:, :step], torch.addcmul(b[:, step:], a[:, step:], b[:, :-step])], dim=1)
        if 2 * step < seq_len:  # the last step's products would never be used
            a = torch.cat([a[:, :step], a[:, step:] * a[:, :-step]], dim=1)
        step *= 2
    return b


class _ForgetMultScan(torch.autograd.Function):
    """Forget-mult as a log-depth scan, with the backward as the reversed scan."""

    @staticmethod
    def forward(ctx, z: Tensor, f: Tensor, h0: Tensor | None) -> Tensor:
        a = 1 - f
        b = f * z
        if h0 is not None and z.shape[1] > 0:
            b[:, 0].addcmul_(a[:, 0], h0)
        out = _linear_scan(a, b)
        ctx.save_for_backward(z, f, h0, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        z, f, h0, out = ctx.saved_tensors
        if z.shape[1] == 0:
            return torch.zeros_like(z), torch.zeros_like(f), None if h0 is None else h0 * 0
        a = 1 - f
        # dh_t = g_t + a_{t+1} dh_{t+1}: scan the reversed sequence, coefficients shifted by one.
        a_next = torch.cat([torch.zeros_like(a[:, :1]), a[:, 1:].flip(1)], dim=1)
        dh = _linear_scan(a_next, grad.flip(1)).flip(1)
        h_first = torch.zeros_like(z[:, :1]) if h0 is None else h0.unsqueeze(1)
        h_prev = torch.cat([h_first, out[:, :-1]], dim=1)
        dh0 = None if h0 is None else a[:, 0] * dh[:, 0]
        return dh * f, dh * (z - h_prev), dh0


@float32_math
def forget_mult_scan(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
    """Forget-mult as a log-depth scan in plain torch: the CUDA path when Triton is unavailable."""
    return _ForgetMultScan.apply(z, f, h0)
