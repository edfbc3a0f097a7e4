"""Devices and distributed data parallelism for stage 04.

Run the CLI under ``torchrun --nproc_per_node N``: :func:`setup_distributed` joins the process
group ``torchrun`` describes in the environment, and :class:`DistributedDataParallelCallback`
wraps the model in torch's ``DistributedDataParallel`` for each ``fit`` (fastai 2.8's own
``DistributedTrainer`` needs the ``accelerate`` package, which this environment does not pin).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from fastai.callback.core import Callback
from torch.nn.parallel import DistributedDataParallel

from ulmfit_core.errors import InputError

__all__ = ["Distributed", "DistributedDataParallelCallback", "resolve_device", "setup_distributed"]

logger = logging.getLogger(__name__)


@dataclass
class Distributed:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    def barrier(self) -> None:
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.barrier()

    def close(self) -> None:
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def resolve_device(requested: str | None, local_rank: int) -> torch.device:
    if requested in (None, "", "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise InputError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {requested!r} requested, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def setup_distributed(requested_device: str | None) -> Distributed:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(requested_device, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size <= 1:
        return Distributed(0, 1, device)
    owns = False
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    logger.info("process %d of %d on %s", rank, world_size, device)
    return Distributed(rank, world_size, device, owns)


class _ResettableDDP(DistributedDataParallel):
    """DDP with the ``reset()`` that fastai's ``ModelResetter`` calls (``fastai.distributed``
    patches it in too, but that module cannot be imported without ``accelerate``)."""

    def reset(self) -> None:
        self.module.reset()


class DistributedDataParallelCallback(Callback):
    """Wrap the model in torch's ``DistributedDataParallel`` for each fit (fastai's pattern)."""

    # After TrainEvalCallback put the model on its device; fastai's DistributedTrainer uses 11 too.
    order = 11

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def before_fit(self) -> None:
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.learn.model = _ResettableDDP(self.learn.model, device_ids=ids)

    def after_fit(self) -> None:
        if isinstance(self.learn.model, DistributedDataParallel):
            self.learn.model = self.learn.model.module
