"""Stage 04's own fastai callbacks: the NaN/inf guard and the error it leads to.

The rest of the recipe's callbacks are fastai's (``GradientClip``, ``rnn_cbs`` for AR/TAR),
added by :func:`lm_training.learner.build_learner`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as torch_dist
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.rnn import RNNRegularizer

from ulmfit_core.errors import InputError

__all__ = ["NonFiniteLossGuard", "TrainingDiverged"]


class TrainingDiverged(InputError):
    """The loss became NaN or infinite: the learning rate is too high for this model/data."""


class NonFiniteLossGuard(Callback):
    """Stop training at the first NaN/inf loss (training or validation), with a clear message.

    It raises ``CancelFitException`` before the backward pass, so no NaN reaches the weights and
    the epoch's checkpoint is not written. In distributed training the decision is all-reduced,
    so every process stops at the same batch instead of waiting on the others.
    """

    order = RNNRegularizer.order + 1  # after AR/TAR were added to the loss

    def __init__(self, world_size: int = 1) -> None:
        self.world_size = world_size
        self.tripped: dict[str, Any] | None = None

    def before_fit(self) -> None:
        self.tripped = None

    def after_loss(self) -> None:
        loss = self.learn.loss_grad if self.training else self.learn.loss
        bad = (~torch.isfinite(loss.detach())).any().to(torch.int32)
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.all_reduce(bad, op=torch_dist.ReduceOp.MAX)
        if bad.item():
            self.tripped = {
                "epoch": self.epoch,
                "batch": self.iter + 1,
                "stage": "training" if self.training else "validation",
                "loss": float(loss.detach().float().reshape(-1)[0]),
            }
            raise CancelFitException()
