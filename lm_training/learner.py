"""Stage 04's recipe as a fastai ``Learner``: loss, optimizer, splitter, callbacks, precision.

The recipe is the predecessor's, which follows fastai's and MultiFiT's: ``CrossEntropyLossFlat``,
``Adam(wd=0.1, eps=1e-7)``, the language-model layer groups, ``GradientClip(0.1)``,
``rnn_cbs(alpha=2, beta=1)`` (AR/TAR), metrics accuracy and perplexity, fastai's
``MixedPrecision`` for fp16/bf16 on CUDA only, and ``fit_one_cycle`` with
``moms=(0.8, 0.7, 0.8)``. Stage 04 (:mod:`lm_training.run`) and the GPU check
(``benchmarks/gpu_check_train.py``) both build their Learner here, so they cannot drift apart.
Stage 08's text classifier (:mod:`lm_training.classifier_train`) builds its own here too, with
its loss, layer groups and metrics, and without gradient clipping (as fastai's
``text_classifier_learner``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import fastai.callback.schedule  # noqa: F401 - patches Learner.fit_one_cycle and lr_find
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.progress import ProgressCallback
from fastai.callback.rnn import rnn_cbs
from fastai.callback.training import GradientClip
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import Perplexity, accuracy
from fastai.optimizer import Adam
from fastcore.basics import noop
from torch import nn

from lm_training.config import Phase
from lm_training.models import language_model_split

__all__ = ["MOMS", "build_learner", "fit_phase", "freeze_for_phase"]

logger = logging.getLogger(__name__)

MOMS = (0.8, 0.7, 0.8)


def build_learner(
    model: nn.Module,
    dls: DataLoaders,
    *,
    device: torch.device,
    precision: str = "fp32",
    callbacks: Sequence[Callback] = (),
    metrics: Sequence[Any] | None = None,
    progress: bool = False,
    path: Path | None = None,
    loss_func: Callable[..., Any] | None = None,
    splitter: Callable[[nn.Module], Any] = language_model_split,
    clip: float | None = 0.1,
) -> Learner:
    """The recipe's ``Learner`` for a built model: stage 04's language model by default.

    Args:
        model: from :func:`lm_training.models.build_language_model` (weights loaded, if any),
            or stage 08's classifier.
        dls: the training and validation loaders, on ``device``.
        device: where training runs; fp16/bf16 mixed precision is for CUDA only and is
            ignored with a warning elsewhere.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        callbacks: added after the recipe's ``GradientClip`` and AR/TAR callbacks (e.g. the
            :class:`~lm_training.callbacks.NonFiniteLossGuard`, DDP, a test's recorder).
        metrics: ``None`` for stage 04's accuracy and perplexity.
        progress: keep fastai's progress bars (else removed); per-epoch lines are never printed
            by fastai (its ``logger`` is a no-op), the stages log their own.
        path: the Learner's ``path`` (``None``: fastai's default).
        loss_func: ``None`` for ``CrossEntropyLossFlat()``.
        splitter: the layer groups (stage 04's: one per recurrent layer, then embedding and
            decoder).
        clip: ``GradientClip``'s max norm; ``None`` for no clipping.
    """
    clipping = [] if clip is None else [GradientClip(clip)]
    learn = Learner(
        dls,
        model,
        loss_func=CrossEntropyLossFlat() if loss_func is None else loss_func,
        opt_func=partial(Adam, wd=0.1, eps=1e-7),
        splitter=splitter,
        cbs=[*clipping, *rnn_cbs(alpha=2, beta=1), *callbacks],
        metrics=[accuracy, Perplexity()] if metrics is None else list(metrics),
        path=path,
    )
    learn.logger = noop  # per-epoch lines go through logging instead
    if not progress:
        learn.remove_cb(ProgressCallback)
    if precision != "fp32":
        if device.type == "cuda":
            learn.add_cb(MixedPrecision(amp_mode=precision))
        else:
            logger.warning("--%s is for CUDA only; training in fp32 on %s", precision, device)
    return learn


def fit_phase(
    learn: Learner, phase: Phase, start_epoch: int = 0, cbs: Sequence[Callback] = ()
) -> None:
    """``fit_one_cycle`` for one phase of the plan, with the recipe's momentums.

    Freezing (``phase.frozen``) is the caller's: ``freeze_to``/``unfreeze`` also reset the
    optimizer, which resuming must restore afterwards.
    """
    learn.fit_one_cycle(
        phase.epochs,
        phase.lr_max,
        moms=MOMS,
        div=phase.div,
        pct_start=phase.pct_start,
        start_epoch=start_epoch,
        cbs=list(cbs),
    )


def freeze_for_phase(learn: Learner, phase: Phase) -> None:
    """``freeze_to(-phase.trainable_groups)`` for a frozen phase, else ``unfreeze()``.

    Both create the optimizer if needed and clear its state, as at any phase start.
    """
    if phase.frozen:
        learn.freeze_to(-phase.trainable_groups)
    else:
        learn.unfreeze()
