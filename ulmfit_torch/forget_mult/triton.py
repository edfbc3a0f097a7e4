"""Forget-mult as Triton kernels: the CUDA path when ``triton`` is importable.

The kernels (forward and backward) are compiled lazily on the first CUDA call, never at import.
Each program owns a block of batch*hidden columns and loops over time with the hidden state in
registers. The math is done in float32 for half/bfloat16 inputs, which keep their dtype.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ulmfit_torch.forget_mult.contract import check_shapes, common_dtype

__all__ = ["forget_mult_triton"]

_TRITON_BLOCK = 128


# The kernels below are plain functions until _triton_kernels() imports Triton (first CUDA call),
# binds ``tl`` and jit-compiles them in place. They live at module level because Triton resolves
# names through the function's globals (closures are not supported by every Triton version).
tl: Any = None


def _column_pointers(ptr, cols, hidden, stride_b, stride_h):
    # Column c = b*hidden + j of a (batch, time, hidden) tensor: b*stride_b + j*stride_h.
    b = (cols // hidden).to(tl.int64)
    j = (cols % hidden).to(tl.int64)
    return ptr + b * stride_b + j * stride_h


def _forward_kernel(
    z_ptr, f_ptr, h0_ptr, out_ptr, n_columns, hidden, seq_len,
    z_sb, z_st, z_sh, f_sb, f_st, f_sh, o_sb, o_st, o_sh,
    HAS_H0: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_columns
    z_col = _column_pointers(z_ptr, cols, hidden, z_sb, z_sh)
    f_col = _column_pointers(f_ptr, cols, hidden, f_sb, f_sh)
    o_col = _column_pointers(out_ptr, cols, hidden, o_sb, o_sh)
    if HAS_H0:
        h = tl.load(h0_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(seq_len):
        z = tl.load(z_col + t * z_st, mask=mask, other=0.0).to(tl.float32)
        f = tl.load(f_col + t * f_st, mask=mask, other=0.0).to(tl.float32)
        h = f * z + (1.0 - f) * h
        tl.store(o_col + t * o_st, h.to(out_ptr.dtype.element_ty), mask=mask)


def _backward_step(
    t, carry, h_prev, g_col, z_col, f_col, dz_col, df_col,
    g_st, z_st, f_st, dz_st, df_st, mask,
):  # fmt: skip
    # dh_t = g_t + (1 - f_{t+1}) dh_{t+1};  dz_t = dh_t f_t;  df_t = dh_t (z_t - h_{t-1})
    dh = tl.load(g_col + t * g_st, mask=mask, other=0.0).to(tl.float32) + carry
    z = tl.load(z_col + t * z_st, mask=mask, other=0.0).to(tl.float32)
    f = tl.load(f_col + t * f_st, mask=mask, other=0.0).to(tl.float32)
    tl.store(dz_col + t * dz_st, (dh * f).to(dz_col.dtype.element_ty), mask=mask)
    tl.store(df_col + t * df_st, (dh * (z - h_prev)).to(df_col.dtype.element_ty), mask=mask)
    return dh - dh * f


def _backward_kernel(
    z_ptr, f_ptr, h_ptr, h0_ptr, g_ptr, dz_ptr, df_ptr, dh0_ptr, n_columns, hidden, seq_len,
    z_sb, z_st, z_sh, f_sb, f_st, f_sh, h_sb, h_st, h_sh, g_sb, g_st, g_sh,
    dz_sb, dz_st, dz_sh, df_sb, df_st, df_sh,
    HAS_H0: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_columns
    z_col = _column_pointers(z_ptr, cols, hidden, z_sb, z_sh)
    f_col = _column_pointers(f_ptr, cols, hidden, f_sb, f_sh)
    h_col = _column_pointers(h_ptr, cols, hidden, h_sb, h_sh)
    g_col = _column_pointers(g_ptr, cols, hidden, g_sb, g_sh)
    dz_col = _column_pointers(dz_ptr, cols, hidden, dz_sb, dz_sh)
    df_col = _column_pointers(df_ptr, cols, hidden, df_sb, df_sh)
    carry = tl.zeros([BLOCK], dtype=tl.float32)
    # Steps T-1 .. 1 read h_{t-1} from the forward output; step 0 reads h0 (or zeros).
    for i in range(seq_len - 1):
        t = seq_len - 1 - i
        h_prev = tl.load(h_col + (t - 1) * h_st, mask=mask, other=0.0).to(tl.float32)
        carry = _backward_step(
            t, carry, h_prev, g_col, z_col, f_col, dz_col, df_col,
            g_st, z_st, f_st, dz_st, df_st, mask,
        )  # fmt: skip
    if HAS_H0:
        h0 = tl.load(h0_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        h0 = tl.zeros([BLOCK], dtype=tl.float32)
    carry = _backward_step(
        0, carry, h0, g_col, z_col, f_col, dz_col, df_col,
        g_st, z_st, f_st, dz_st, df_st, mask,
    )  # fmt: skip
    if HAS_H0:
        tl.store(dh0_ptr + cols, carry.to(dh0_ptr.dtype.element_ty), mask=mask)


@functools.cache
def _triton_kernels() -> tuple[Any, Any]:
    """Import Triton and compile the kernels above; called on first CUDA use, never at import.

    Each program owns ``BLOCK`` of the batch*hidden columns (consecutive hidden units, so loads are
    coalesced) and walks them through time with the hidden state in registers, in float32.
    """
    global tl, _column_pointers, _backward_step
    import triton
    import triton.language

    tl = triton.language
    _column_pointers = triton.jit(_column_pointers)
    _backward_step = triton.jit(_backward_step)
    return triton.jit(_forward_kernel), triton.jit(_backward_kernel)


def _grid(n_columns: int) -> tuple[int]:
    return ((n_columns + _TRITON_BLOCK - 1) // _TRITON_BLOCK,)


class _ForgetMultTriton(torch.autograd.Function):
    """Triton kernels; inputs keep their dtype and strides, the math is float32 in registers."""

    @staticmethod
    def forward(ctx, z: Tensor, f: Tensor, h0: Tensor | None) -> Tensor:
        forward_kernel, _ = _triton_kernels()
        batch, seq_len, hidden = z.shape
        h0 = None if h0 is None else h0.contiguous()
        out = torch.empty_like(z)
        n_columns = batch * hidden
        if n_columns and seq_len:
            forward_kernel[_grid(n_columns)](
                z,
                f,
                z if h0 is None else h0,
                out,
                n_columns,
                hidden,
                seq_len,
                *z.stride(),
                *f.stride(),
                *out.stride(),
                HAS_H0=h0 is not None,
                BLOCK=_TRITON_BLOCK,
            )
        ctx.save_for_backward(z, f, h0, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        _, backward_kernel = _triton_kernels()
        z, f, h0, out = ctx.saved_tensors
        batch, seq_len, hidden = z.shape
        dz, df = torch.empty_like(z), torch.empty_like(f)
        dh0 = None if h0 is None else torch.zeros_like(h0)
        n_columns = batch * hidden
        if n_columns and seq_len:
            backward_kernel[_grid(n_columns)](
                z,
                f,
                out,
                z if h0 is None else h0,
                grad,
                dz,
                df,
                z if dh0 is None else dh0,
                n_columns,
                hidden,
                seq_len,
                *z.stride(),
                *f.stride(),
                *out.stride(),
                *grad.stride(),
                *dz.stride(),
                *df.stride(),
                HAS_H0=h0 is not None,
                BLOCK=_TRITON_BLOCK,
            )
        return dz, df, dh0


def forget_mult_triton(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
    """Forget-mult with Triton kernels (CUDA); half/bfloat16 keep their dtype, math is float32."""
    check_shapes(z, f, h0)
    z, f, h0 = common_dtype(z, f, h0)
    return _ForgetMultTriton.apply(z, f, h0)
