"""The language-model config sidecar (``EXP.json``) that travels with every ``EXP.pth``.

Stage 04 writes it, stage 05 (the TensorFlow-side converter) reads it to rebuild the architecture
without re-typed flags. This module uses the standard library only, so that the converter can
import it without torch or fastai.

Defaults follow the predecessor's recipe (fastai's ``awd_lstm_lm_config`` / 2.2.7's
``awd_qrnn_lm_config`` with MultiFiT's dropouts): embedding 400; AWD-LSTM 3 layers of 1152,
QRNN 4 layers of 1552, the last layer always of the embedding size so that the decoder can be
tied to the embedding. Dropouts: LSTM input_p 0.6, weight_p 0.5; QRNN input_p 0.4,
weight_p 0.1; both output_p 0.4, embed_p 0.1, hidden_p 0.2; all multiplied by ``drop_mult``
(fastai's ``get_language_model`` semantics, explicit values included). These are the only
defaults: the Keras side (``ulmfit_keras``, where ``EncoderConfig`` is this class) builds from the
same config.

Reading: :meth:`LMConfig.load` / :meth:`LMConfig.from_dict` read a file (strict: ``format`` and
``version`` keys, every size and dropout present); :meth:`LMConfig.from_any` also takes a plain
dict of model fields (tests, hand-written configs), filling in the recipe's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
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
SIZE_NAMES = ("vocab_size", "emb_size", "hidden_size", "n_layers")
# What a config file must hold (``from_dict``); a plain dict of model fields (``from_any``) needs
# only the architecture and the sizes.
FILE_REQUIRED = ("arch", *SIZE_NAMES, *DROPOUT_NAMES)
MODEL_REQUIRED = ("arch", *SIZE_NAMES)

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
    ``drop_mult`` is kept for the record. A dropout left ``None`` takes the recipe's default for
    ``arch`` times ``drop_mult`` (as :meth:`create`). ``windows`` is ``None`` for AWD-LSTM; for
    QRNN it is ``None`` or fastai's ``[2, 1, 1, ...]`` (:attr:`layer_windows` is never ``None``
    for QRNN). ``zoneout`` (QRNN only, not in fastai's AWD-QRNN) is a fine-tuning option of the
    Keras QRNN; it defaults to 0.
    """

    arch: str
    vocab_size: int
    emb_size: int
    hidden_size: int
    n_layers: int
    input_p: float | None = None
    weight_p: float | None = None
    embed_p: float | None = None
    hidden_p: float | None = None
    output_p: float | None = None
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
    zoneout: float = 0.0

    def __post_init__(self) -> None:
        _check_arch(self.arch)
        for name in SIZE_NAMES:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"LM config: {name} must be a positive integer, got {value!r}")
        defaults = arch_defaults(self.arch)
        for name in DROPOUT_NAMES:
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[name] * self.drop_mult)
        for name in (*DROPOUT_NAMES, "zoneout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise InputError(f"LM config: {name} must be in [0, 1), got {value!r}")
        if self.arch != "qrnn" and self.zoneout:
            raise InputError("LM config: zoneout is a QRNN option")
        expected_windows = qrnn_windows(self.n_layers) if self.arch == "qrnn" else None
        if self.windows is not None:
            if list(self.windows) != expected_windows:
                raise InputError(
                    f"LM config: windows {list(self.windows)} are not supported for {self.arch} "
                    f"with {self.n_layers} layers (expected {expected_windows})"
                )
            object.__setattr__(self, "windows", list(self.windows))
        if not 0 <= self.pad_id < self.vocab_size:
            raise InputError(f"LM config: pad_id {self.pad_id} outside the vocabulary")
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
    def layer_windows(self) -> list[int] | None:
        """QRNN window of each layer (fastai's ``[2, 1, 1, ...]``); ``None`` for AWD-LSTM."""
        return qrnn_windows(self.n_layers) if self.arch == "qrnn" else None

    @property
    def dropouts(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in DROPOUT_NAMES}

    def replace(self, **changes: Any) -> LMConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, ``format`` and ``version`` first.

        ``zoneout`` (added after version 1 files were written) is left out while it is 0, so a
        stage-04/05 config is the same file as before it existed.
        """
        data = dataclasses.asdict(self)
        head = {"format": data.pop("format"), "version": data.pop("version")}
        if not data["zoneout"]:
            del data["zoneout"]
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
        missing = sorted(set(FILE_REQUIRED) - set(data))
        if missing:
            raise InputError(f"{source}: missing keys {missing}")
        if data["arch"] not in ARCHS:
            raise InputError(
                f"{source}: unknown architecture {data['arch']!r}; use one of {', '.join(ARCHS)}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {key: value for key, value in data.items() if key in names}
        try:
            return cls(**kwargs)
        except InputError as err:
            raise InputError(f"{source}: {err}") from None

    @classmethod
    def from_any(
        cls, config: LMConfig | Mapping[str, Any] | Any, source: str | None = None
    ) -> LMConfig:
        """An ``LMConfig`` from itself, a config file's dict, a plain dict of model fields, or
        any object with ``to_dict()``.

        A dict with a ``format`` key is read as a file (:meth:`from_dict`). A plain dict needs
        ``arch`` and the four sizes; what it leaves out takes the defaults, and keys that are not
        fields are ignored.

        Args:
            source: where the config came from, to start error messages with (a file name).

        Raises:
            InputError: missing keys or invalid values (the message names them).
            TypeError: neither a mapping nor an object with ``to_dict()``.
        """
        if isinstance(config, LMConfig):
            return config
        if not isinstance(config, Mapping):
            to_dict = getattr(config, "to_dict", None)
            if to_dict is None:
                raise TypeError(
                    f"config must be a dict or have to_dict(), got {type(config).__name__}"
                )
            config = to_dict()
        if "format" in config:
            return cls.from_dict(dict(config), source=source or "LM config")
        try:
            missing = [key for key in MODEL_REQUIRED if key not in config]
            if missing:
                raise InputError(f"LM config: missing keys {missing}")
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{key: value for key, value in config.items() if key in names})
        except InputError as err:
            if source is None:
                raise
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
