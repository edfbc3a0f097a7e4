"""The task half of a fastai classifier's sidecar: what stage 08 writes and stage 05 reads.

A stage-08 classifier is ``EXP.pth`` (a state dict with fastai's ``get_text_classifier`` keys:
the encoder under ``0.module.*``, ``PoolingLinearClassifier`` under ``1.layers.*``) and
``EXP.json``: the language model's fields under the same names as an LM sidecar
(:class:`~ulmfit_core.lm_config.LMConfig`, so :meth:`LMConfig.load` reads it as it is), plus one
``"classifier"`` object, :class:`ClassifierHead`::

    {"format": "ulmfit-lm-config", "arch": "awd-lstm", ..., "classifier": {
        "labels": ["neg", "pos"], "head_sizes": [1200, 50, 2], "head_dropouts": [0.4, 0.1],
        "bptt": 72, "max_len": 1440, "bn_eps": 1e-05, "bn_momentum": 0.1}}

``head_sizes`` are fastai's ``PoolingLinearClassifier`` dims: ``3 * emb_size`` (concat pooling),
the ``lin_ftrs``, the number of classes. ``bn_momentum`` is PyTorch's (Keras' is ``1 - it``).

Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ulmfit_core.artifacts import write_json
from ulmfit_core.errors import InputError

__all__ = [
    "CLASSIFIER_KEY",
    "DEFAULT_BPTT",
    "DEFAULT_MAX_LEN",
    "ClassifierHead",
    "read_classifier_head",
    "write_classifier_sidecar",
]

CLASSIFIER_KEY = "classifier"
# fastai's text_classifier_learner: seq_len 72 and max_len 72 * 20.
DEFAULT_BPTT = 72
DEFAULT_MAX_LEN = 72 * 20


@dataclass(frozen=True)
class ClassifierHead:
    """A fastai text classifier's task: labels, head, and its ``SentenceEncoder`` windows.

    Args:
        labels: class names, in label-map order (index = class id).
        head_sizes: ``[3 * emb_size, *lin_ftrs, len(labels)]``.
        head_dropouts: one rate per linear layer (fastai's ``ps``, ``output_p`` first).
        bptt: the chunk the encoder reads at a time (the state is carried across chunks).
        max_len: only the outputs of the last chunks within ``max_len`` tokens are pooled.
        bn_eps, bn_momentum: the head's ``BatchNorm1d`` settings, in PyTorch's convention.
    """

    labels: list[str]
    head_sizes: list[int]
    head_dropouts: list[float] = field(default_factory=list)
    bptt: int = DEFAULT_BPTT
    max_len: int = DEFAULT_MAX_LEN
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise InputError(f"classifier: need at least 2 distinct labels, got {self.labels}")
        if len(self.head_sizes) < 2 or self.head_sizes[-1] != len(self.labels):
            raise InputError(
                f"classifier: head_sizes {self.head_sizes} must end with the number of labels "
                f"({len(self.labels)})"
            )
        if self.head_dropouts and len(self.head_dropouts) != len(self.head_sizes) - 1:
            raise InputError(
                f"classifier: {len(self.head_dropouts)} head dropouts for "
                f"{len(self.head_sizes) - 1} linear layers"
            )
        if self.bptt < 1 or self.max_len < 1:
            raise InputError(
                f"classifier: bptt and max_len must be positive, got {self.bptt}, {self.max_len}"
            )
        if not self.bn_eps > 0 or not 0.0 <= self.bn_momentum <= 1.0:
            raise InputError(
                f"classifier: bad BatchNorm settings eps={self.bn_eps}, momentum={self.bn_momentum}"
            )

    @property
    def lin_ftrs(self) -> list[int]:
        """The hidden widths between pooling and the output layer."""
        return list(self.head_sizes[1:-1])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ClassifierHead:
        if not isinstance(data, dict):
            raise InputError(f"{source}: '{CLASSIFIER_KEY}' must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted({"labels", "head_sizes"} - set(data))
        if missing:
            raise InputError(f"{source}: '{CLASSIFIER_KEY}' is missing {missing}")
        try:
            return cls(**{key: value for key, value in data.items() if key in names})
        except (InputError, TypeError) as err:
            raise InputError(f"{source}: {err}") from None


def read_classifier_head(sidecar: str | os.PathLike) -> ClassifierHead | None:
    """The ``"classifier"`` object of ``sidecar``; ``None`` for an LM sidecar or no file."""
    path = Path(sidecar)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict) or CLASSIFIER_KEY not in data:
        return None
    return ClassifierHead.from_dict(data[CLASSIFIER_KEY], str(path))


def write_classifier_sidecar(
    path: str | os.PathLike, lm_config: dict[str, Any], head: ClassifierHead
) -> None:
    """``EXP.json``: the LM config's fields (``LMConfig.to_dict()``) and the classifier (atomic)."""
    write_json(path, {**lm_config, CLASSIFIER_KEY: head.to_dict()})
