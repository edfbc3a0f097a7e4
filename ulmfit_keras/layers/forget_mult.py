"""The QRNN's forget-mult ``h_t = f_t*z_t + (1-f_t)*h_{t-1}``, named by algorithm.

It is the linear recurrence ``h_t = a_t*h_{t-1} + b_t`` with ``a = 1-f`` and ``b = f*z``, run as

* ``"sequential"`` (default): ``keras.ops.scan`` over time, two element-wise ops per step; or
* ``"log_depth"``: a Hillis-Steele scan of the combine ``((a1, b1), (a2, b2)) ->
  (a1*a2, a2*b1 + b2)`` (log depth, no division, stable). Since issue 11 it is our own loop, not
  ``keras.ops.associative_scan``, whose TensorFlow graph holds ``tf.cond`` branches that TFLite
  cannot run on builtin ops.

Measured on 2 CPU cores with TensorFlow 2.21 / Keras 3.15 for (32, 70, 1552) inside
``tf.function``: sequential 9 ms forward / 20 ms forward+backward, log-depth 58 / 136 ms (max
error vs a float64 loop 1.5e-7 and 1.8e-7; the log-depth figures are those of the former
``associative_scan``). The log-depth scan needs a static sequence length, so the default is the
sequential scan; the log-depth one serves fixed-length models: the stage-13 export, accelerators.

The names before issue 10, ``"scan"`` (sequential) and ``"associative"`` (log depth), are still
accepted: configs of saved ``.keras`` files hold them. The torch side's ``forget_mult_scan`` is
the log-depth algorithm, which is why the Keras names say which algorithm runs.
"""

from __future__ import annotations

from keras import ops

__all__ = [
    "FORGET_MULT_IMPLS",
    "forget_mult",
    "forget_mult_log_depth",
    "forget_mult_sequential",
    "resolve_forget_mult_impl",
]

FORGET_MULT_IMPLS = ("sequential", "log_depth")
# Earlier names, still found in saved configs.
_FORMER_NAMES = {"scan": "sequential", "associative": "log_depth"}


def resolve_forget_mult_impl(name: str) -> str:
    """The implementation ``name`` stands for (one of :data:`FORGET_MULT_IMPLS`).

    Raises:
        ValueError: an unknown name.
    """
    impl = _FORMER_NAMES.get(name, name)
    if impl not in FORGET_MULT_IMPLS:
        raise ValueError(f"unknown forget-mult implementation {name!r}: use {FORGET_MULT_IMPLS}")
    return impl


def forget_mult_sequential(z, f):
    """The forget-mult as ``keras.ops.scan`` over time."""
    # Time major, with a = 1-f and b = f*z stacked into one tensor: keras.ops.scan on the
    # TensorFlow backend accepts a dynamic time axis only with a single scanned tensor.
    a = ops.transpose(1.0 - f, (1, 0, 2))
    b = ops.transpose(f * z, (1, 0, 2))
    xs = ops.stack([a, b], axis=1)  # (time, 2, batch, hidden)

    def step(h, x):
        h = x[0] * h + x[1]
        return h, h

    _, hs = ops.scan(step, ops.zeros_like(b[0]), xs)
    return ops.transpose(hs, (1, 0, 2))


def forget_mult_log_depth(z, f):
    """The forget-mult as a log-depth scan (needs a static time axis).

    Hillis-Steele doubling over the affine maps ``h -> a*h + b``: after the step with offset
    ``d``, position ``t`` holds the composition of the maps ``t-2d+1 .. t``. A Python loop of
    ``ceil(log2(time))`` element-wise steps, so the graph has no control flow: it converts to
    TFLite builtins and to ONNX as it is.
    """
    time = z.shape[1]
    if time is None:
        raise ValueError("the log-depth forget-mult needs a static sequence length")
    a, b = 1.0 - f, f * z
    offset = 1
    while offset < time:
        shift = [[0, 0], [offset, 0], [0, 0]]
        b = b + a * ops.pad(b, shift)[:, :time]
        a = a * ops.pad(a, shift, constant_values=1.0)[:, :time]
        offset *= 2
    return b


_IMPLS = {"sequential": forget_mult_sequential, "log_depth": forget_mult_log_depth}


def forget_mult(z, f, impl: str = "sequential"):
    """``h_t = f_t*z_t + (1-f_t)*h_{t-1}`` over ``(batch, time, hidden)`` with ``h_{-1} = 0``.

    Args:
        z: candidate values.
        f: forget gates, same shape.
        impl: ``"sequential"`` or ``"log_depth"`` (see the module docstring).
    """
    return _IMPLS[resolve_forget_mult_impl(impl)](z, f)
