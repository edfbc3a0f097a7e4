"""The reader of fastai text-classifier state dicts (``get_text_classifier``, stage 08).

A classifier is ``SequentialRNN(SentenceEncoder(AWD_LSTM | AWD_QRNN), PoolingLinearClassifier)``:

* ``0.module.*``: the encoder, with a language model's ``0.*`` keys below ``module``. It is read
  by the one LM reader (:func:`ulmfit_torch.state_dict.read_lm_state`) after stripping
  ``module.``, so both read a file alike;
* ``1.layers.{i}.*``: one fastai ``LinBnDrop`` per linear layer: ``BatchNorm1d`` at ``.0``
  (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``), then
  ``Dropout`` (absent when its rate is 0), then a bias-free ``Linear`` (``.2`` or ``.1``).

The task (labels, ``bptt``, ``max_len``, BatchNorm settings) comes from the sidecar's
``"classifier"`` object (:mod:`ulmfit_core.classifier_config`); the weights must agree with it.

numpy and :mod:`ulmfit_core` only (tensors are duck-typed): never fastai or TensorFlow.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ulmfit_core.classifier_config import ClassifierHead
from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import LMConfig
from ulmfit_torch.fastai_keys import as_numpy
from ulmfit_torch.state_dict import LMState, read_lm_state

__all__ = [
    "BN_PARTS",
    "ClassifierState",
    "HeadBlock",
    "is_classifier_state",
    "read_classifier_state",
]

ENCODER_PREFIX = "0.module."
HEAD_PREFIX = "1.layers."
BN_PARTS = ("weight", "bias", "running_mean", "running_var")
_HEAD_KEY = re.compile(r"^1\.layers\.(\d+)\.(\d+)\.(\w+)$")


@dataclass(frozen=True)
class HeadBlock:
    """One ``LinBnDrop``: the BatchNorm's arrays (:data:`BN_PARTS`) and the Linear's weight
    ``(n_out, n_in)`` as numpy float32."""

    batch_norm: Mapping[str, np.ndarray]
    linear: np.ndarray


@dataclass(frozen=True)
class ClassifierState:
    """A read and checked classifier: the encoder (an :class:`LMState`), the task, the head."""

    encoder: LMState
    head: ClassifierHead
    blocks: tuple[HeadBlock, ...]
    ignored: tuple[str, ...]

    @property
    def config(self) -> LMConfig:
        return self.encoder.config


def _state_dict(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    model = checkpoint.get("model") if isinstance(checkpoint, Mapping) else None
    return model if isinstance(model, Mapping) else checkpoint


def is_classifier_state(checkpoint: Mapping[str, Any]) -> bool:
    """Whether the keys are a fastai text classifier's (encoder under ``0.module.``, head under
    ``1.layers.``) rather than a language model's."""
    keys = _state_dict(checkpoint)
    return f"{ENCODER_PREFIX}encoder.weight" in keys and any(
        key.startswith(HEAD_PREFIX) for key in keys
    )


def _head_blocks(
    state_dict: Mapping[str, Any], head: ClassifierHead, source: str
) -> tuple[tuple[HeadBlock, ...], list[str]]:
    """The ``LinBnDrop`` blocks, checked against the sidecar's ``head_sizes``; unused keys."""
    found: dict[int, dict[int, dict[str, Any]]] = {}
    for key, value in state_dict.items():
        if key.startswith(HEAD_PREFIX):
            match = _HEAD_KEY.match(key)
            if match is None:
                raise InputError(f"{source}: unexpected classifier head key {key}")
            block, module, part = int(match[1]), int(match[2]), match[3]
            found.setdefault(block, {}).setdefault(module, {})[part] = value
    sizes = head.head_sizes
    if sorted(found) != list(range(len(sizes) - 1)):
        raise InputError(
            f"{source}: the head has blocks {sorted(found)}, but the sidecar's head_sizes "
            f"{sizes} need {len(sizes) - 1} (1.layers.0 .. 1.layers.{len(sizes) - 2})"
        )
    blocks, ignored = [], []
    for index, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        modules = found[index]
        where = f"{source}: {HEAD_PREFIX}{index}"
        bn = modules.get(0, {})
        missing = [part for part in BN_PARTS if part not in bn]
        if missing:
            raise InputError(
                f"{where}.0 is not a BatchNorm1d (missing {missing}); fastai's classifier head "
                "has BatchNorm before every Linear"
            )
        linear = [m for m in modules if m != 0 and "weight" in modules[m]]
        if len(linear) != 1 or set(modules[linear[0]]) != {"weight"}:
            raise InputError(
                f"{where}: expected one bias-free Linear after the BatchNorm, found modules "
                f"{ {m: sorted(parts) for m, parts in modules.items()} }"
            )
        weight = as_numpy(modules[linear[0]]["weight"]).astype(np.float32)
        arrays = {part: as_numpy(bn[part]).astype(np.float32) for part in BN_PARTS}
        bad = [f"{p} {a.shape}" for p, a in arrays.items() if a.shape != (n_in,)]
        if weight.shape != (n_out, n_in) or bad:
            raise InputError(
                f"{where}: shapes Linear {weight.shape}, BatchNorm {bad or 'ok'} do not fit the "
                f"sidecar's head_sizes {sizes} (block {index}: {n_in} -> {n_out})"
            )
        ignored += [f"{HEAD_PREFIX}{index}.0.{p}" for p in bn if p not in BN_PARTS]
        blocks.append(HeadBlock(arrays, weight))
    return tuple(blocks), ignored


def read_classifier_state(
    checkpoint: Mapping[str, Any],
    head: ClassifierHead | None,
    source: str = "checkpoint",
    sidecar: LMConfig | None = None,
    *,
    sidecar_name: str = "sidecar",
) -> ClassifierState:
    """Read a fastai classifier: its encoder through the LM reader, its head against ``head``.

    Args:
        checkpoint: a state dict, or ``load_pth``'s ``{'model': ..., ...}``.
        head: the sidecar's ``"classifier"`` object (required: the labels are only there).
        sidecar: the sidecar's LM fields (:class:`LMConfig`).

    Raises:
        InputError: no classifier sidecar, a head that does not fit it, or what
            :func:`read_lm_state` raises for the encoder.
    """
    if head is None:
        raise InputError(
            f"{source} is a fastai text classifier, but {sidecar_name} has no 'classifier' "
            "object (its labels, head sizes, bptt and max_len): convert the files stage 08 wrote"
        )
    state_dict = _state_dict(checkpoint)
    encoder_dict = {
        "0." + key.removeprefix(ENCODER_PREFIX): value
        for key, value in state_dict.items()
        if key.startswith(ENCODER_PREFIX)
    }
    others = sorted(key for key in state_dict if not key.startswith((ENCODER_PREFIX, HEAD_PREFIX)))
    if others:
        raise InputError(f"{source}: keys outside the encoder and the head: {others[:5]}")
    # A classifier has no decoder: the encoder reads as a tied LM without output bias.
    encoder_sidecar = None if sidecar is None else sidecar.replace(tie_weights=True, out_bias=False)
    encoder = read_lm_state(encoder_dict, source, encoder_sidecar, sidecar_name=sidecar_name)
    if head.head_sizes[0] != 3 * encoder.config.emb_size:
        raise InputError(
            f"{sidecar_name}: head_sizes starts with {head.head_sizes[0]}, but concat pooling "
            f"of the {encoder.config.emb_size}-wide encoder gives {3 * encoder.config.emb_size}"
        )
    blocks, ignored = _head_blocks(state_dict, head, source)
    ignored = tuple(sorted((*(ENCODER_PREFIX + k[2:] for k in encoder.ignored), *ignored)))
    return ClassifierState(encoder, head, blocks, ignored)
