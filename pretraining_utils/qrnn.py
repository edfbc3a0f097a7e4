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

Forget-mult implementations (all batch-first ``(batch, time, hidden)``):

* :func:`forget_mult_reference`: the plain per-timestep loop, the ground truth for tests.
* :func:`forget_mult_cpu`: the CPU path. A custom autograd function whose forward and backward are
  time loops of one in-place ``addcmul`` per step, with the element-wise work around them done in
  chunks of a few timesteps that stay in cache. On 2 CPU cores (``benchmarks/bench_qrnn.py``) a
  log-depth Hillis-Steele scan was 5-15x slower (log2(T) full passes over memory). A tight
  per-step loop (2 ops per step forward, 5 backward) was 1.2-1.5x slower at batch*hidden up to
  about 25k and tied above about 50k, where both are bound by memory bandwidth.
* :func:`forget_mult_triton`: the CUDA path when ``triton`` is importable. Triton kernels (forward
  and backward) are compiled lazily on the first CUDA call. Each program owns a block of
  batch*hidden columns and loops over time. The math is done in float32 for half/bfloat16 inputs.
* :func:`forget_mult_scan`: a log-depth Hillis-Steele scan in plain torch, the CUDA fallback when
  Triton is missing or fails its first-use self-check (few kernel launches; stable, no division).

:func:`forget_mult` dispatches on the tensors' device through :func:`select_forget_mult`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "QRNN",
    "QRNNLayer",
    "WeightDropout",
    "awd_qrnn_layer",
    "awd_qrnn_lm_state_dict_shapes",
    "forget_mult",
    "forget_mult_cpu",
    "forget_mult_reference",
    "forget_mult_scan",
    "forget_mult_triton",
    "select_forget_mult",
]

logger = logging.getLogger(__name__)

ForgetMult = Callable[[Tensor, Tensor, Tensor | None], Tensor]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Forget-mult: reference
# ---------------------------------------------------------------------------------------------


def forget_mult_reference(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
    """Per-timestep ``h_t = f_t*z_t + (1-f_t)*h_{t-1}``: the definition, used as ground truth.

    Args:
        z: candidate values, ``(batch, time, hidden)``.
        f: forget gates, same shape as ``z``.
        h0: initial hidden state ``(batch, hidden)``; ``None`` means zeros (so ``h_0 = f_0*z_0``).

    Returns:
        All hidden states, ``(batch, time, hidden)``.
    """
    _check_shapes(z, f, h0)
    h = h0
    steps = []
    for t in range(z.shape[1]):
        z_t, f_t = z[:, t], f[:, t]
        h = f_t * z_t if h is None else f_t * z_t + (1 - f_t) * h
        steps.append(h)
    if not steps:
        return z.new_empty(z.shape)
    return torch.stack(steps, dim=1)


def _check_shapes(z: Tensor, f: Tensor, h0: Tensor | None) -> None:
    if z.dim() != 3 or z.shape != f.shape:
        raise ValueError(
            f"forget-mult needs z and f of the same (batch, time, hidden) shape, "
            f"got {tuple(z.shape)} and {tuple(f.shape)}"
        )
    if h0 is not None and h0.shape != (z.shape[0], z.shape[2]):
        raise ValueError(
            f"h0 must be (batch, hidden) = {(z.shape[0], z.shape[2])}, got {tuple(h0.shape)}"
        )


def _common_dtype(z: Tensor, f: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Bring z, f (and h0) to one dtype so that the ``out=``/in-place kernels below accept them."""
    dtype = torch.promote_types(z.dtype, f.dtype)
    h0 = None if h0 is None else h0.to(dtype)
    return z.to(dtype), f.to(dtype), h0


def _float32_math(fn: ForgetMult) -> ForgetMult:
    """Run ``fn`` in float32 for half/bfloat16 inputs and cast the result back (autograd-safe)."""

    @functools.wraps(fn)
    def wrapper(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
        _check_shapes(z, f, h0)
        z, f, h0 = _common_dtype(z, f, h0)
        if z.dtype not in _LOW_PRECISION:
            return fn(z, f, h0)
        h0_32 = None if h0 is None else h0.float()
        return fn(z.float(), f.float(), h0_32).to(z.dtype)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Forget-mult: CPU (chunked time loop with a hand-written backward)
# ---------------------------------------------------------------------------------------------

# Chunk buffers of about 2**19 elements (2 MiB of float32, one L2) measured best on 2 cores: fewer,
# larger element-wise ops than one per step, while the chunk is still in cache for the time loop.
_CHUNK_ELEMENTS = 1 << 19
_MIN_CHUNK, _MAX_CHUNK = 4, 32


def _chunk_len(n_columns: int, seq_len: int) -> int:
    """Timesteps per chunk for ``n_columns = batch*hidden``: 4 to 32, at most ``seq_len``."""
    k = _CHUNK_ELEMENTS // max(n_columns, 1)
    return max(1, min(seq_len, max(_MIN_CHUNK, min(_MAX_CHUNK, k))))


def _time_major_empty(like: Tensor, seq_len: int | None = None) -> Tensor:
    """An uninitialised ``(batch, time, hidden)`` view of time-major storage.

    Every timestep is then one contiguous block, which the per-step ops of the loop below need:
    on batch-first storage a step is ``batch`` separate rows, and the loop ran 1.2-1.4x slower.
    """
    batch, time, hidden = like.shape
    time = time if seq_len is None else seq_len
    return like.new_empty(time, batch, hidden).transpose(0, 1)


class _ForgetMultCPU(torch.autograd.Function):
    """Chunked loop: forward and backward each take one ``addcmul`` per timestep.

    Forward, per chunk: ``b = f*z`` (written straight into the output) and ``a = 1-f`` in two
    chunk-wide ops, then ``h_t = b_t + a_t*h_{t-1}`` in place, one op per step.

    Backward: the gradient of a linear recurrence is the same recurrence run backwards,
    ``dh_t = g_t + a_{t+1}*dh_{t+1}`` (one ``addcmul`` per step), and then chunk-wide
    ``dz = dh*f``, ``df = dh*(z - h_{t-1})`` and ``dh0 = a_0*dh_0``.

    Only the inputs and the output are saved (no extra activation memory); no cumulative
    products are formed, so nothing underflows however long the sequence. The output and the
    gradients are batch-first views of time-major storage (see :func:`_time_major_empty`).
    """

    @staticmethod
    def forward(ctx, z: Tensor, f: Tensor, h0: Tensor | None) -> Tensor:
        batch, seq_len, hidden = z.shape
        out = _time_major_empty(z)
        if seq_len == 0:
            ctx.save_for_backward(z, f, h0, out)
            return out
        k_max = _chunk_len(batch * hidden, seq_len)
        a_buf = _time_major_empty(z, k_max)
        one = z.new_ones(())
        h = h0
        for c0 in range(0, seq_len, k_max):
            c1 = min(c0 + k_max, seq_len)
            out_c, a_c, f_c = out[:, c0:c1], a_buf[:, : c1 - c0], f[:, c0:c1]
            torch.mul(f_c, z[:, c0:c1], out=out_c)
            torch.sub(one, f_c, out=a_c)
            for out_t, a_t in zip(out_c.unbind(1), a_c.unbind(1), strict=True):
                if h is not None:
                    out_t.addcmul_(a_t, h)
                h = out_t
        # Saved after the in-place writes: autograd checks saved tensors' versions at backward.
        ctx.save_for_backward(z, f, h0, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        z, f, h0, out = ctx.saved_tensors
        batch, seq_len, hidden = z.shape
        dz, df = _time_major_empty(z), _time_major_empty(f)
        # carry = a_t*dh_t for the first step of the chunk just done: the gradient flowing into
        # the step before it.
        carry = z.new_zeros(batch, hidden)
        if seq_len == 0:
            return dz, df, (carry if h0 is not None else None)
        k_max = _chunk_len(batch * hidden, seq_len)
        a_buf, dh_buf, diff_buf = (_time_major_empty(z, k_max) for _ in range(3))
        one = z.new_ones(())
        last_chunk = True
        for c0 in reversed(range(0, seq_len, k_max)):
            c1 = min(c0 + k_max, seq_len)
            k = c1 - c0
            z_c, f_c = z[:, c0:c1], f[:, c0:c1]
            a_c, dh_c, diff_c = a_buf[:, :k], dh_buf[:, :k], diff_buf[:, :k]
            torch.sub(one, f_c, out=a_c)
            g_steps, a_steps, dh_steps = grad[:, c0:c1].unbind(1), a_c.unbind(1), dh_c.unbind(1)
            if last_chunk:
                dh_steps[-1].copy_(g_steps[-1])
                last_chunk = False
            else:
                torch.add(g_steps[-1], carry, out=dh_steps[-1])
            for i in range(k - 2, -1, -1):
                torch.addcmul(g_steps[i], a_steps[i + 1], dh_steps[i + 1], out=dh_steps[i])
            torch.mul(dh_c, f_c, out=dz[:, c0:c1])
            # diff_t = z_t - h_{t-1}, with h_{-1} = h0 or 0.
            if c0 > 0:
                torch.sub(z_c, out[:, c0 - 1 : c1 - 1], out=diff_c)
            else:
                if k > 1:
                    torch.sub(z_c[:, 1:], out[:, : k - 1], out=diff_c[:, 1:])
                if h0 is None:
                    diff_c[:, 0].copy_(z_c[:, 0])
                else:
                    torch.sub(z_c[:, 0], h0, out=diff_c[:, 0])
            torch.mul(dh_c, diff_c, out=df[:, c0:c1])
            torch.mul(a_steps[0], dh_steps[0], out=carry)
        return dz, df, (carry if h0 is not None else None)


@_float32_math
def forget_mult_cpu(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
    """Fast forget-mult for CPU tensors (works on any device); same contract as the reference.

    The result is a ``(batch, time, hidden)`` view of time-major storage; inputs that are such
    views too (as :class:`QRNNLayer` passes them) are the fastest.
    """
    return _ForgetMultCPU.apply(z, f, h0)


# ---------------------------------------------------------------------------------------------
# Forget-mult: log-depth scan in plain torch (CUDA fallback)
# ---------------------------------------------------------------------------------------------


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


@_float32_math
def forget_mult_scan(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
    """Forget-mult as a log-depth scan in plain torch: the CUDA path when Triton is unavailable."""
    return _ForgetMultScan.apply(z, f, h0)


# ---------------------------------------------------------------------------------------------
# Forget-mult: Triton (CUDA), built lazily
# ---------------------------------------------------------------------------------------------

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
    _check_shapes(z, f, h0)
    z, f, h0 = _common_dtype(z, f, h0)
    return _ForgetMultTriton.apply(z, f, h0)


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


_triton_checked: dict[torch.device, bool] = {}


def _triton_ready(device: torch.device) -> bool:
    """Whether the Triton kernels compile and agree with the reference on ``device`` (cached).

    The first call compiles both kernels and checks them on a tiny problem (forward and all three
    gradients). Any failure is logged once and the scan is used on that device from then on.
    """
    if device not in _triton_checked:
        _triton_checked[device] = _triton_importable() and _triton_self_check(device)
    return _triton_checked[device]


def _triton_self_check(device: torch.device) -> bool:
    gen = torch.Generator().manual_seed(0)
    z, f, h0, g = (
        torch.rand(shape, generator=gen, dtype=torch.float64)
        for shape in [(3, 7, 5), (3, 7, 5), (3, 5), (3, 7, 5)]
    )
    results = []
    # The first CUDA call may come from eval code under no_grad/inference_mode or from autocast.
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast(device.type, enabled=False),
    ):
        for fn in (forget_mult_reference, forget_mult_triton):
            inputs = [x.to(device, torch.float32).requires_grad_() for x in (z, f, h0)]
            try:
                out = fn(*inputs)
                out.backward(g.to(device, torch.float32))
            except Exception as err:  # a Triton, driver or compiler problem must not stop training
                logger.warning(
                    "Triton forget-mult unusable on %s (%r); using the scan", device, err
                )
                return False
            results.append([out.detach(), *(x.grad for x in inputs)])
    if not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*results, strict=True)):
        logger.warning(
            "Triton forget-mult disagrees with the reference on %s; using the scan", device
        )
        return False
    return True


def select_forget_mult(device: torch.device | str) -> ForgetMult:
    """The forget-mult implementation used for tensors on ``device``.

    CPU (and any non-CUDA device): :func:`forget_mult_cpu`. CUDA: :func:`forget_mult_triton` when
    Triton is importable and passes its first-use self-check, else :func:`forget_mult_scan`.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return forget_mult_cpu
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return forget_mult_triton if _triton_ready(device) else forget_mult_scan


def forget_mult(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
    """``h_t = f_t*z_t + (1-f_t)*h_{t-1}`` over ``(batch, time, hidden)``, dispatched on device.

    Args:
        z: candidate values, ``(batch, time, hidden)``.
        f: forget gates, same shape.
        h0: initial hidden state ``(batch, hidden)``, or ``None`` for zeros.
    """
    return select_forget_mult(z.device)(z, f, h0)


# ---------------------------------------------------------------------------------------------
# Weight dropout
# ---------------------------------------------------------------------------------------------


class WeightDropout(nn.Module):
    """Drop-connect on named weights of a wrapped module, with fastai 2.2.7's state-dict layout.

    The trained weight is the parameter ``{name}_raw`` of this wrapper; it is never modified here.
    On each forward the wrapped module gets, as a plain tensor attribute, a dropped copy
    (``F.dropout(raw, weight_p)``) in training mode or an alias of the raw weight in eval mode,
    and the attribute is reset to a detached alias afterwards so no graph is kept on the module.

    State dict: ``{name}_raw`` plus the wrapped module's other entries (``module.bias``), exactly
    what fastai 2.2.7 saved. Its ``WeightDropout.__init__`` did ``delattr(module, name)`` and then
    ``setattr(module, name, w.clone())``, and ``_setweights`` set ``F.dropout(raw_w)`` or
    ``raw_w.clone()``. All of these are plain tensors, not ``Parameter``s (since torch 1.7, ops on a
    Parameter return plain tensors), so ``module.{name}`` was an ordinary attribute and not in the
    state dict. fastai v1 instead wrote the dropped copy into ``module._parameters``, so its files
    also hold ``module.{name}``. Loading accepts that key and drops it: it holds the last
    *dropped* copy, never the trained weight.

    Args:
        module: the module to wrap, e.g. the ``nn.Linear`` of a QRNN layer.
        weight_p: probability of zeroing each weight during training.
        layer_names: names of the weights to drop (fastai's default was ``"weight_hh_l0"`` for
            LSTMs; a QRNN's linear uses ``"weight"``).
    """

    def __init__(
        self, module: nn.Module, weight_p: float, layer_names: str | Sequence[str] = "weight"
    ) -> None:
        super().__init__()
        self.module = module
        self.weight_p = weight_p
        self.layer_names = (layer_names,) if isinstance(layer_names, str) else tuple(layer_names)
        for name in self.layer_names:
            weight = getattr(module, name)
            delattr(module, name)
            self.register_parameter(
                f"{name}_raw", nn.Parameter(weight.detach(), requires_grad=weight.requires_grad)
            )
            setattr(module, name, weight.detach())
        if isinstance(module, nn.RNNBase):
            # As fastai did: cuDNN flattening would re-pack the substituted non-parameter weights.
            module.flatten_parameters = _do_nothing

    def _dropped(self, name: str) -> Tensor:
        raw = getattr(self, f"{name}_raw")
        if self.training and self.weight_p > 0:
            return F.dropout(raw, p=self.weight_p, training=True)
        # A view, not the Parameter itself: setattr would register a Parameter on the wrapped module
        # (and F.dropout returns its input unchanged when it does nothing).
        return raw.view_as(raw)

    def forward(self, *args, **kwargs):
        for name in self.layer_names:
            setattr(self.module, name, self._dropped(name))
        try:
            if not isinstance(self.module, nn.RNNBase):
                return self.module(*args, **kwargs)
            with warnings.catch_warnings():  # "weights are not part of single contiguous chunk"
                warnings.simplefilter("ignore", UserWarning)
                return self.module(*args, **kwargs)
        finally:
            for name in self.layer_names:
                setattr(self.module, name, getattr(self, f"{name}_raw").detach())

    def reset(self) -> None:
        """Reset the wrapped module if it has state (fastai's interface)."""
        if hasattr(self.module, "reset"):
            self.module.reset()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in self.layer_names:
            key = f"{prefix}module.{name}"
            if state_dict.pop(key, None) is not None:
                logger.debug("ignoring %s: a dropped copy of %s%s_raw", key, prefix, name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"weight_p={self.weight_p}, layer_names={list(self.layer_names)}"


def _do_nothing() -> None:
    pass


# ---------------------------------------------------------------------------------------------
# QRNN layers
# ---------------------------------------------------------------------------------------------


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


def awd_qrnn_lm_state_dict_shapes(
    vocab_sz: int,
    emb_sz: int,
    n_hid: int,
    n_layers: int,
    bidir: bool = False,
    out_bias: bool = True,
) -> dict[str, tuple[int, ...]]:
    """Keys and shapes, in order, of a fastai 2.2.7 AWD-QRNN language model's state dict.

    The model is ``SequentialRNN(AWD_QRNN, LinearDecoder)``; ``1.decoder.weight`` is listed even
    when tied to the embedding, because ``state_dict`` lists it under both names.
    """
    n_dir = 2 if bidir else 1
    shapes: dict[str, tuple[int, ...]] = {
        "0.encoder.weight": (vocab_sz, emb_sz),
        "0.encoder_dp.emb.weight": (vocab_sz, emb_sz),
    }
    for layer in range(n_layers):
        n_in = emb_sz if layer == 0 else n_hid
        n_out = (n_hid if layer != n_layers - 1 else emb_sz) // n_dir
        window = 2 if layer == 0 else 1
        gates, inputs = 3 * n_out, window * n_in
        prefix = f"0.rnns.{layer}.layers"
        shapes[f"{prefix}.0.linear.weight_raw"] = (gates, inputs)
        shapes[f"{prefix}.0.linear.module.bias"] = (gates,)
        if bidir:
            shapes[f"{prefix}_bwd.0.linear.weight"] = (gates, inputs)
            shapes[f"{prefix}_bwd.0.linear.bias"] = (gates,)
    shapes["1.decoder.weight"] = (vocab_sz, emb_sz)
    if out_bias:
        shapes["1.decoder.bias"] = (vocab_sz,)
    return shapes
