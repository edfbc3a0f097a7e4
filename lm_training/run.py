"""One stage-04 run assembled from its parts: data, model config, seeded model, Learner.

:func:`prepare_run` does the steps one after the other (open the corpora and the pretrained
model, resolve the :class:`~ulmfit_core.lm_config.LMConfig`, cut the loaders, seed and build the
model, build the Learner, log what was built) and hands the built parts to a
:class:`TrainingRun`, which only holds them and the history the epochs add.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.learner import Learner
from torch import nn

from lm_training.callbacks import NonFiniteLossGuard
from lm_training.checkpoint import load_checkpoint, save_checkpoint, seed_everything
from lm_training.config import OutputPaths, Phase, TrainConfig, output_paths, plan_phases
from lm_training.distributed import Distributed, DistributedDataParallelCallback
from lm_training.learner import build_learner
from lm_training.loaders import make_loaders, open_corpora
from lm_training.models import build_language_model
from lm_training.pretrained import load_weights, read_pretrained
from ulmfit_core.lm_config import LMConfig

__all__ = ["TrainingRun", "build_model", "prepare_run"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What one training run holds: its settings, process, model config, Learner and history.

    ``guard`` is the Learner's NaN guard (not added to it for the LR finder).
    """

    cfg: TrainConfig
    dist: Distributed
    lm_config: LMConfig
    learn: Learner
    guard: NonFiniteLossGuard
    history: list[dict[str, Any]] = field(default_factory=list)
    paths: OutputPaths = field(init=False)
    phases: list[Phase] = field(init=False)

    def __post_init__(self) -> None:
        self.paths = output_paths(self.cfg.save_path, self.cfg.exp_name)
        self.phases = plan_phases(self.cfg)

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def save_checkpoint(self, learn: Learner, phase_index: int, epochs_done_in_phase: int) -> None:
        """Write the end-of-epoch state (rank 0; every process contributes its RNG state)."""
        save_checkpoint(
            learn,
            self.paths.checkpoint_dir,
            self.dist,
            progress={
                "phase": phase_index,
                "epochs_done_in_phase": epochs_done_in_phase,
                "epochs_done": len(self.history),
            },
            history=self.history,
            config=self.cfg.to_dict(),
            lm_config=self.lm_config.to_dict(),
        )

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint to resume from, or ``None`` (see :func:`load_checkpoint`)."""
        return load_checkpoint(self.paths.checkpoint_dir, self.cfg, self.rank)


def build_model(
    lm_config: LMConfig,
    seed: int,
    dist: Distributed,
    weights: dict[str, torch.Tensor] | None = None,
    source: str = "",
) -> nn.Module:
    """Seed every RNG, build the model and load ``weights`` (from ``source``) into it.

    In distributed training the torch RNG is then re-seeded per process, so that the dropout
    masks differ between processes (DDP gives every process rank 0's weights).
    """
    seed_everything(seed)
    model = build_language_model(lm_config)
    if weights is not None:
        load_weights(model, weights, source)
    if dist.world_size > 1:
        seq = np.random.SeedSequence([seed, dist.rank])
        torch.manual_seed(int(seq.generate_state(1, np.uint64)[0]))
    return model


def prepare_run(
    cfg: TrainConfig,
    dist: Distributed,
    convert_dir: Path,
    callbacks: Sequence[Callback] = (),
    for_lr_find: bool = False,
) -> TrainingRun:
    """Open the data, build the model and its Learner for ``cfg`` in this process.

    Args:
        convert_dir: where text id files are converted to binary corpora (a temporary dir).
        callbacks: extra fastai callbacks for the Learner (e.g. for tests).
        for_lr_find: leave the NaN guard out (the LR finder runs into huge losses on purpose).
    """
    corpora = open_corpora(cfg, convert_dir)
    pretrained, weights = (
        read_pretrained(cfg.pretrained_model) if cfg.pretrained_model else (None, None)
    )
    lm_config = cfg.lm_config(corpora.vocab_size, corpora.spm_model_sha256, pretrained)
    dls = make_loaders(cfg, corpora, dist.rank, dist.world_size, dist.device)
    model = build_model(lm_config, cfg.seed, dist, weights, str(cfg.pretrained_model))

    guard = NonFiniteLossGuard(dist.world_size)
    cbs: list[Callback] = [] if for_lr_find else [guard]
    if dist.world_size > 1:
        cbs.append(DistributedDataParallelCallback(dist.device))
    learn = build_learner(
        model,
        dls,
        device=dist.device,
        precision=cfg.precision,
        callbacks=[*cbs, *callbacks],
        progress=cfg.progress and dist.rank == 0,
        path=cfg.save_path,
    )
    if dist.rank == 0:
        _log_model(lm_config, model, dist.device)
    return TrainingRun(cfg, dist, lm_config, learn, guard)


def _log_model(lm_config: LMConfig, model: nn.Module, device: torch.device) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "model: %s, vocab %d, emb %d, %d layers of %d, %.2fM parameters, on %s",
        lm_config.arch,
        lm_config.vocab_size,
        lm_config.emb_size,
        lm_config.n_layers,
        lm_config.hidden_size,
        n_params / 1e6,
        device,
    )
