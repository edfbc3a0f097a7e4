"""RNG states, end-of-epoch checkpoints, resuming, and the final ``.pth`` state (stages 04, 08).

A checkpoint (model, optimizer, progress, every process's RNG states, smoothed loss, loss scaler,
history, the run's settings) is written atomically after every epoch to
``SAVE_PATH/EXP.ckpt/last.pth``. :func:`load_checkpoint` refuses to resume a run whose settings
changed, except those it is told may change (stage 04's: :data:`RESUMABLE_CHANGES`).
:func:`restore_fit_state` puts a checkpoint's RNG states, smoothed loss and loss scaler back at
the start of the epoch it resumes. Everything is saved in plain types
(:func:`~ulmfit_torch.checkpoint_io.plain_state`), so that ``torch.load(weights_only=True)``
reads it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as torch_dist
from fastai.learner import Learner
from fastai.torch_core import get_model
from fastcore.foundation import L

from lm_training.distributed import Distributed
from ulmfit_core.errors import InputError
from ulmfit_torch.checkpoint_io import load_pth, plain_state, save_pth

__all__ = [
    "CHECKPOINT_FILE",
    "RESUMABLE_CHANGES",
    "WARN_ON_CHANGE",
    "RunSettings",
    "final_state",
    "load_checkpoint",
    "restore_fit_state",
    "restore_optimizer",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pth"
# Run settings that may differ when resuming: where and how fast it runs, not what it computes.
RESUMABLE_CHANGES = frozenset(
    {"resume", "progress", "device", "precision", "pretrain_lr", "finetune_lr"}
)
# Of those, the ones that change what is computed: resuming with another value warns.
WARN_ON_CHANGE = ("pretrain_lr", "finetune_lr")


class RunSettings(Protocol):
    """A run's settings as the checkpoint records them (``TrainConfig``, stage 08's config)."""

    def to_dict(self) -> dict[str, Any]: ...


def rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain values (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gaussian": cached,
        },
        "python": [py_version, list(py_state), py_gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(
    learn: Learner,
    directory: Path,
    dist: Distributed,
    *,
    progress: dict[str, int],
    history: list[dict[str, Any]],
    config: dict[str, Any],
    lm_config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the end-of-epoch state (rank 0; every process contributes its RNG state).

    Args:
        directory: the run's checkpoint directory; the file is :data:`CHECKPOINT_FILE` in it.
        progress: ``phase``, ``epochs_done_in_phase`` and ``epochs_done``.
        config: the run's settings (:meth:`TrainConfig.to_dict`), checked when resuming.
        lm_config: the model's config (:meth:`LMConfig.to_dict`).
        extra: more entries for the checkpoint (plain types; e.g. stage 08's best epoch).
    """
    rng = rng_state()
    if dist.world_size > 1:
        gathered: list[Any] = [None] * dist.world_size
        torch_dist.all_gather_object(gathered, rng)
        rng_states = gathered
    else:
        rng_states = [rng]
    if dist.rank == 0:
        smooth = learn.recorder.smooth_loss
        scaler = getattr(learn, "scaler", None)
        state = {
            "model": get_model(learn.model).state_dict(),
            "opt": plain_state(learn.opt.state_dict()),
            "progress": progress,
            "rng": rng_states,
            "smooth_loss": {
                "val": smooth.val.detach().cpu().as_subclass(torch.Tensor).clone(),
                "count": smooth.count,
            },
            "scaler": scaler.state_dict() if scaler is not None else None,
            "history": list(history),
            "config": config,
            "lm_config": lm_config,
            "world_size": dist.world_size,
            **(extra or {}),
        }
        directory.mkdir(parents=True, exist_ok=True)
        save_pth(state, directory / CHECKPOINT_FILE)
        logger.debug("checkpoint written after epoch %d", len(history))
    dist.barrier()


def load_checkpoint(
    directory: Path,
    cfg: RunSettings,
    rank: int = 0,
    *,
    resumable: Collection[str] = RESUMABLE_CHANGES,
    warn_on_change: Collection[str] = WARN_ON_CHANGE,
) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` to resume ``cfg`` from, or ``None`` when there is none.

    Args:
        cfg: the run's settings, compared key by key (``to_dict()``) with the checkpoint's.
        resumable: the settings that may differ (stage 04's by default).
        warn_on_change: those of ``resumable`` whose change is logged as a warning.

    Raises:
        InputError: the checkpoint was written with other settings (beyond ``resumable``), or
            cannot be read.
    """
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        if rank == 0:
            logger.info("no checkpoint at %s: starting from scratch", path)
        return None
    state = load_pth(path, map_location="cpu")
    saved = state.get("config", {})
    current = cfg.to_dict()
    diffs = [
        f"{k}: {saved.get(k)!r} -> {v!r}"
        for k, v in current.items()
        if k not in resumable and saved.get(k) != v
    ]
    if diffs:
        raise InputError(
            f"cannot resume from {path}: the run's settings changed ({'; '.join(diffs)}); "
            "use the same settings, or another --exp-name to start afresh"
        )
    for k in warn_on_change:
        if saved.get(k) != current.get(k):
            logger.warning(
                "resuming with %s %s (the checkpoint used %s)", k, current[k], saved.get(k)
            )
    return state


def restore_optimizer(learn: Learner, saved: dict[str, Any]) -> None:
    """Load a checkpoint's plain optimizer state into ``learn.opt``.

    ``hypers`` becomes an ``L`` again, as fastai builds it. The checkpoint is read onto the CPU,
    so each state tensor moves to its parameter's device (else a CUDA step would mix devices).
    """
    learn.opt.load_state_dict({"state": list(saved["state"]), "hypers": L(saved["hypers"])})
    for param, param_state in learn.opt.state.items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                param_state[key] = value.to(param.device)


def restore_fit_state(
    learn: Learner,
    state: dict[str, Any],
    *,
    rank: int = 0,
    world_size: int = 1,
    mid_phase: bool = True,
) -> None:
    """At the start of the resumed epoch: this process's RNG states and, ``mid_phase`` (resuming
    inside a ``fit``, not at its start), the smoothed loss and the loss scaler.

    A checkpoint written by another number of processes keeps the fresh RNG states (warned).
    """
    rng = state["rng"]
    if len(rng) == world_size:
        set_rng_state(rng[rank])
    else:
        logger.warning(
            "the checkpoint was written by %d processes, this run has %d: RNG states are not "
            "restored, so the result will differ from an uninterrupted run",
            len(rng),
            world_size,
        )
    if not mid_phase:
        return  # a phase starts afresh: each fit resets the smoothed loss and the loss scaler
    smooth = learn.recorder.smooth_loss
    smooth.val, smooth.count = state["smooth_loss"]["val"], state["smooth_loss"]["count"]
    scaler = getattr(learn, "scaler", None)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])


def final_state(learn: Learner, copy: bool = False) -> dict[str, Any]:
    """``{'model', 'opt'}`` as ``Learner.save`` has it, but loadable with plain ``torch.load``.

    fastai's own ``save_model`` pickles the optimizer's ``L`` and numpy scalars, which
    ``weights_only=True`` refuses; and tensors saved on CUDA would not load on a CPU-only machine.

    Args:
        copy: clone every tensor. Without it, a model on the CPU shares its tensors with the
            returned state, which training would then go on changing.
    """
    model_state = get_model(learn.model).state_dict()
    for key, value in model_state.items():  # in place: keeps the state dict's _metadata
        value = value.detach().cpu()
        model_state[key] = value.clone() if copy else value
    return {"model": model_state, "opt": _to_cpu(plain_state(learn.opt.state_dict()), copy)}


def _to_cpu(obj: Any, copy: bool = False) -> Any:
    """The plain structure ``obj`` with every tensor moved to the CPU (and cloned, ``copy``)."""
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        return tensor.clone() if copy else tensor
    if isinstance(obj, dict):
        return {k: _to_cpu(v, copy) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(item, copy) for item in obj)
    return obj
