"""Forget-mult as a time loop: the reference definition and the CPU path.

* :func:`forget_mult_reference`: the plain per-timestep loop, the ground truth for tests.
* :func:`forget_mult_cpu`: the CPU path. A custom autograd function whose forward and backward are
  time loops of one in-place ``addcmul`` per step, with the element-wise work around them done in
  chunks of a few timesteps that stay in cache. On 2 CPU cores (``benchmarks/bench_qrnn.py``) a
  log-depth Hillis-Steele scan (:mod:`ulmfit_torch.forget_mult.log_depth`) was 5-15x slower
  (log2(T) full passes over memory). A tight per-step loop (2 ops per step forward, 5 backward)
  was 1.2-1.5x slower at batch*hidden up to about 25k and tied above about 50k, where both are
  bound by memory bandwidth.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ulmfit_torch.forget_mult.contract import check_shapes, float32_math

__all__ = ["forget_mult_cpu", "forget_mult_reference"]


def forget_mult_reference(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
    """Per-timestep ``h_t = f_t*z_t + (1-f_t)*h_{t-1}``: the definition, used as ground truth.

    Args:
        z: candidate values, ``(batch, time, hidden)``.
        f: forget gates, same shape as ``z``.
        h0: initial hidden state ``(batch, hidden)``; ``None`` means zeros (so ``h_0 = f_0*z_0``).

    Returns:
        All hidden states, ``(batch, time, hidden)``.
    """
    check_shapes(z, f, h0)
    h = h0
    steps = []
    for t in range(z.shape[1]):
        z_t, f_t = z[:, t], f[:, t]
        h = f_t * z_t if h is None else f_t * z_t + (1 - f_t) * h
        steps.append(h)
    if not steps:
        return z.new_empty(z.shape)
    return torch.stack(steps, dim=1)


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


@float32_math
def forget_mult_cpu(z: Tensor, f: Tensor, h0: Tensor | None = None) -> Tensor:
    """Fast forget-mult for CPU tensors (works on any device); same contract as the reference.

    The result is a ``(batch, time, hidden)`` view of time-major storage; inputs that are such
    views too (as :class:`QRNNLayer` passes them) are the fastest.
    """
    return _ForgetMultCPU.apply(z, f, h0)
