"""The language-model config sidecar (``EXP.json``) that travels with every ``EXP.pth``.

Stage 04 writes it, stage 05 (the TensorFlow-side converter) reads it to rebuild the architecture
without re-typed flags. This module uses the standard library only, so that the converter can
import it without torch or fastai.

Defaults follow the predecessor's recipe (fastai's ``awd_lstm_lm_config`` / 2.2.7's
``awd_qrnn_lm_config`` with MultiFiT's dropouts): embedding 400; AWD-LSTM 3 layers of 1152,
QRNN 4 layers of 1552, the last layer always of the embedding size so that the decoder can be
tied to the embedding. Dropouts: LSTM input_p 0.6, weight_p 0.5; QRNN input_p 0.4,
weight_p 0.1; both output_p 0.4, embed_p 0.1, hidden_p 0.2; all multiplied by ``drop_mult``
(fastai's ``get_language_model`` semantics, explicit values included).
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
from ulmfit_core.ids import PAD_ID, SPECIAL_IDS

FORMAT_NAME = "ulmfit-lm-config"
FORMAT_VERSION = 1
ARCHS = ("awd-lstm", "qrnn")
DROPOUT_NAMES = ("input_p", "weight_p", "embed_p", "hidden_p", "output_p")

_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "awd-lstm": {"hidden_size": 1152, "n_layers": 3, "input_p": 0.6, "weight_p": 0.5},
    "qrnn": {"hidden_size": 1552, "n_layers": 4, "input_p": 0.4, "weight_p": 0.1},
}
_SHARED_DEFAULTS: dict[str, Any] = {
    "emb_size": 400,
    "output_p": 0.4,
    "embed_p": 0.1,
    "hidden_p": 0.2,
}


def qrnn_windows(n_layers: int) -> list[int]:
    """fastai 2.2.7's AWD-QRNN windows: 2 on the first layer (``[x_t, x_{t-1}]``), 1 after."""
    return [2] + [1] * (n_layers - 1)


def arch_defaults(arch: str) -> dict[str, Any]:
    """The default sizes and (unscaled) dropouts of ``arch``."""
    _check_arch(arch)
    return {**_SHARED_DEFAULTS, **_ARCH_DEFAULTS[arch]}


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")


@dataclass(frozen=True)
class LMConfig:
    """Everything needed to rebuild a trained language model, in fastai's terms.

    The dropouts are the values the model was built with, ``drop_mult`` already applied;
    ``drop_mult`` is kept for the record. ``windows`` is ``None`` for AWD-LSTM.
    """

    arch: str
    vocab_size: int
    emb_size: int
    hidden_size: int
    n_layers: int
    input_p: float
    weight_p: float
    embed_p: float
    hidden_p: float
    output_p: float
    drop_mult: float = 1.0
    windows: list[int] | None = None
    tie_weights: bool = True
    out_bias: bool = True
    bidir: bool = False
    pad_id: int = PAD_ID
    special_ids: dict[str, int] = field(default_factory=lambda: dict(SPECIAL_IDS))
    spm_model_sha256: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_arch(self.arch)
        for name in ("vocab_size", "emb_size", "hidden_size", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"LM config: {name} must be a positive integer, got {value!r}")
        for name in DROPOUT_NAMES:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise InputError(f"LM config: {name} must be in [0, 1), got {value!r}")
        expected_windows = qrnn_windows(self.n_layers) if self.arch == "qrnn" else None
        if self.windows is not None and list(self.windows) != expected_windows:
            raise InputError(
                f"LM config: windows {self.windows} are not supported for {self.arch} with "
                f"{self.n_layers} layers (expected {expected_windows})"
            )
        if self.special_ids.get("<pad>") != self.pad_id:
            raise InputError(
                f"LM config: pad_id {self.pad_id} is not the <pad> id of {self.special_ids}"
            )

    @classmethod
    def create(
        cls,
        arch: str,
        vocab_size: int,
        *,
        emb_size: int | None = None,
        hidden_size: int | None = None,
        n_layers: int | None = None,
        drop_mult: float = 1.0,
        dropouts: dict[str, float | None] | None = None,
        spm_model_sha256: str | None = None,
        versions: dict[str, str] | None = None,
    ) -> LMConfig:
        """A config with the recipe's defaults for whatever is ``None``.

        Args:
            dropouts: explicit ``input_p`` ... ``output_p`` values (``None`` entries take the
                default); like the defaults, they are multiplied by ``drop_mult``.
        """
        defaults = arch_defaults(arch)
        dropouts = dict(dropouts or {})
        unknown = sorted(set(dropouts) - set(DROPOUT_NAMES))
        if unknown:
            raise InputError(f"unknown dropout names {unknown}; use {', '.join(DROPOUT_NAMES)}")
        if not drop_mult >= 0.0:
            raise InputError(f"drop_mult must not be negative, got {drop_mult}")
        scaled = {}
        for name in DROPOUT_NAMES:
            value = dropouts.get(name)
            scaled[name] = (defaults[name] if value is None else value) * drop_mult
        n_layers = defaults["n_layers"] if n_layers is None else n_layers
        return cls(
            arch=arch,
            vocab_size=vocab_size,
            emb_size=defaults["emb_size"] if emb_size is None else emb_size,
            hidden_size=defaults["hidden_size"] if hidden_size is None else hidden_size,
            n_layers=n_layers,
            drop_mult=drop_mult,
            windows=qrnn_windows(n_layers) if arch == "qrnn" else None,
            spm_model_sha256=spm_model_sha256,
            versions=dict(versions or {}),
            **scaled,
        )

    @property
    def layer_sizes(self) -> list[int]:
        """Output size of each recurrent layer: ``hidden_size``, the last one ``emb_size``."""
        return [self.hidden_size] * (self.n_layers - 1) + [self.emb_size]

    @property
    def dropouts(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in DROPOUT_NAMES}

    def replace(self, **changes: Any) -> LMConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, ``format`` and ``version`` first."""
        data = dataclasses.asdict(self)
        head = {"format": data.pop("format"), "version": data.pop("version")}
        return {**head, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "LM config") -> LMConfig:
        """Validate and build a config; unknown keys (from newer minor additions) are ignored.

        Raises:
            InputError: not an LM config, a newer format version, missing keys, unknown arch.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise InputError(f"{source}: not an {FORMAT_NAME!r} file (no matching 'format' key)")
        if data.get("version") != FORMAT_VERSION:
            raise InputError(
                f"{source}: LM config version {data.get('version')!r} is not supported "
                f"(this code reads version {FORMAT_VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise InputError(f"{source}: missing keys {missing}")
        if data["arch"] not in ARCHS:
            raise InputError(
                f"{source}: unknown architecture {data['arch']!r}; use one of {', '.join(ARCHS)}"
            )
        kwargs = {key: value for key, value in data.items() if key in names}
        try:
            return cls(**kwargs)
        except InputError as err:
            raise InputError(f"{source}: {err}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as indented JSON, atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> LMConfig:
        """Read a config written by :meth:`save`.

        Raises:
            InputError: a missing, unreadable or invalid file.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"LM config {path} not found (it is written next to every .pth)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: not JSON ({err})") from None
        return cls.from_dict(data, source=str(path))


def sidecar_path(pth_path: str | os.PathLike) -> Path:
    """``X.json`` for ``X.pth``: where the config of a ``.pth`` lives."""
    return Path(pth_path).with_suffix(".json")
