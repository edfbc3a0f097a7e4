"""The weights and architecture of a pretrained language model, for fine-tuning in stage 04.

Torch and :mod:`ulmfit_core` only (no fastai): a ``.pth`` is read with
:func:`ulmfit_torch.checkpoint_io.load_pth`, its architecture comes from its ``.json`` sidecar or,
for files without one, from the state dict's keys and shapes (:func:`infer_lm_config`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import LMConfig, sidecar_path
from ulmfit_torch.checkpoint_io import load_pth
from ulmfit_torch.state_dict import read_lm_state

__all__ = ["infer_lm_config", "load_weights", "read_pretrained"]

logger = logging.getLogger(__name__)


def infer_lm_config(state_dict: dict[str, torch.Tensor], source: str) -> LMConfig:
    """Rebuild the sizes of a fastai AWD-LSTM/QRNN language model from its state dict alone.

    For ``.pth`` files without our ``.json`` sidecar (e.g. trained by the predecessor with
    fastai 2.2.7); dropouts get the arch's defaults. The converter's reader does the work
    (:func:`ulmfit_torch.state_dict.read_lm_state`), so both stages read a file alike.
    """
    try:
        return read_lm_state(state_dict, source).config
    except InputError as err:
        detail = str(err).removeprefix(f"{source}: ")
        raise InputError(
            f"{source}: not a fastai AWD-LSTM/AWD-QRNN language model ({detail})"
        ) from None


def read_pretrained(path: Path) -> tuple[LMConfig, dict[str, torch.Tensor]]:
    """The config and weights of a ``.pth`` to fine-tune: the config from its ``.json`` sidecar,
    or inferred from the weights (with a warning) when there is none."""
    weights = load_pth(path)["model"]
    side = sidecar_path(path)
    if side.is_file():
        pre = LMConfig.load(side)
    else:
        logger.warning("%s not found: reading the architecture from the weights", side)
        pre = infer_lm_config(weights, str(path))
    return pre, weights


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load ``weights`` into ``model``; every key and shape must fit (fastai v1's dropped copies
    ``*.module.weight`` are ignored).

    Raises:
        InputError: missing or unexpected keys, or shape mismatches (the first five of each).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(
        set(weights) - set(expected) - {k for k in weights if k.endswith(".module.weight")}
    )
    shapes = [
        f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise InputError(
            f"{source} does not fit the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches {shapes[:5]}"
        )
    model.load_state_dict(weights, strict=False)  # strict=False: fastai v1's dropped copies
