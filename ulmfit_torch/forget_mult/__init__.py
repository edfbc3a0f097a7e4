"""The QRNN's forget-mult, ``h_t = f_t*z_t + (1-f_t)*h_{t-1}``, one module per algorithm.

All implementations are batch-first ``(batch, time, hidden)`` and share one contract
(:mod:`~ulmfit_torch.forget_mult.contract`):

* :mod:`~ulmfit_torch.forget_mult.sequential`: :func:`forget_mult_reference` (the per-timestep
  definition, ground truth for tests) and :func:`forget_mult_cpu` (the CPU path: a chunked time
  loop with a hand-written backward);
* :mod:`~ulmfit_torch.forget_mult.log_depth`: :func:`forget_mult_scan`, a log-depth scan in
  plain torch, the CUDA fallback;
* :mod:`~ulmfit_torch.forget_mult.triton`: :func:`forget_mult_triton`, Triton kernels for CUDA,
  compiled on first use.

:func:`forget_mult` dispatches on the tensors' device through :func:`select_forget_mult`: CPU
(and any non-CUDA device) gets the time loop; CUDA gets Triton when it is importable and passes a
first-use self-check against the reference, else the scan.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
from torch import Tensor

from ulmfit_torch.forget_mult.contract import ForgetMult
from ulmfit_torch.forget_mult.log_depth import forget_mult_scan
from ulmfit_torch.forget_mult.sequential import forget_mult_cpu, forget_mult_reference
from ulmfit_torch.forget_mult.triton import forget_mult_triton

__all__ = [
    "ForgetMult",
    "forget_mult",
    "forget_mult_cpu",
    "forget_mult_reference",
    "forget_mult_scan",
    "forget_mult_triton",
    "select_forget_mult",
]

logger = logging.getLogger(__name__)


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
