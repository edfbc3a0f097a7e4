"""Read a language-model config (the ``EXP.json`` sidecar / ``config.json``) for the Keras side.

The config is written on the fastai side (``ulmfit_core.lm_config.LMConfig``). This module
must not import that package (it belongs to the fastai environment), so it accepts what travels
between the two: a plain dict, or any object with ``to_dict()`` (an ``LMConfig``). Keys it does not
use (``format``, ``version``, ``drop_mult``, ``special_ids``, ``spm_model_sha256``, ``versions``
...) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ulmfit_core.ids import PAD_ID
from ulmfit_core.lm_config import ARCHS

logger = logging.getLogger(__name__)

__all__ = ["ARCHS", "PAD_ID", "EncoderConfig", "read_config"]


# fastai's language-model dropouts (awd_lstm_lm_config; 2.2.7's awd_qrnn_lm_config is the same),
# used only for keys a config leaves out.
_DEFAULT_DROPOUTS = {
    "input_p": 0.25,
    "weight_p": 0.2,
    "embed_p": 0.02,
    "hidden_p": 0.15,
    "output_p": 0.1,
}
_REQUIRED = ("arch", "vocab_size", "emb_size", "hidden_size", "n_layers")


@dataclass(frozen=True)
class EncoderConfig:
    """What the Keras encoder and LM need from a model config, validated.

    Attributes mirror ``LMConfig``'s keys. ``windows`` is ``None`` for AWD-LSTM; for QRNN it is
    one window (1 or 2) per layer, ``[2, 1, 1, ...]`` when the config leaves it out.
    ``zoneout`` (QRNN only) is not in fastai's AWD-QRNN and defaults to 0.
    """

    arch: str
    vocab_size: int
    emb_size: int
    hidden_size: int
    n_layers: int
    pad_id: int = PAD_ID
    input_p: float = _DEFAULT_DROPOUTS["input_p"]
    weight_p: float = _DEFAULT_DROPOUTS["weight_p"]
    embed_p: float = _DEFAULT_DROPOUTS["embed_p"]
    hidden_p: float = _DEFAULT_DROPOUTS["hidden_p"]
    output_p: float = _DEFAULT_DROPOUTS["output_p"]
    windows: tuple[int, ...] | None = None
    zoneout: float = 0.0
    tie_weights: bool = True
    out_bias: bool = True
    bidir: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}: use one of {', '.join(ARCHS)}")
        for name in ("vocab_size", "emb_size", "hidden_size", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"config: {name} must be a positive integer, got {value!r}")
        for name in (*_DEFAULT_DROPOUTS, "zoneout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise ValueError(f"config: {name} must be in [0, 1), got {value!r}")
        if self.bidir:
            raise ValueError("config: bidirectional encoders are not supported by ulmfit_keras")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"config: pad_id {self.pad_id} outside the vocabulary")
        if self.arch == "qrnn":
            windows = self.windows or (2,) + (1,) * (self.n_layers - 1)
            object.__setattr__(self, "windows", tuple(int(w) for w in windows))
            if len(self.windows) != self.n_layers or any(w not in (1, 2) for w in self.windows):
                raise ValueError(
                    f"config: windows {list(self.windows)} must be {self.n_layers} values of 1 or 2"
                )
        elif self.windows is not None:
            raise ValueError(f"config: windows are for QRNN only, got {self.windows} for awd-lstm")
        if self.arch == "awd-lstm" and self.zoneout:
            raise ValueError("config: zoneout is a QRNN option")

    @property
    def layer_sizes(self) -> list[int]:
        """Output size of each recurrent layer: ``hidden_size``, the last ``emb_size`` (fastai)."""
        return [self.hidden_size] * (self.n_layers - 1) + [self.emb_size]

    @classmethod
    def from_any(cls, config: EncoderConfig | Mapping[str, Any] | Any) -> EncoderConfig:
        """An ``EncoderConfig`` from itself, a dict, or an object with ``to_dict()``.

        Raises:
            ValueError: missing keys or invalid values (the message names them).
        """
        if isinstance(config, EncoderConfig):
            return config
        if not isinstance(config, Mapping):
            to_dict = getattr(config, "to_dict", None)
            if to_dict is None:
                raise TypeError(
                    f"config must be a dict or have to_dict(), got {type(config).__name__}"
                )
            config = to_dict()
        missing = [key for key in _REQUIRED if key not in config]
        if missing:
            raise ValueError(f"config: missing keys {missing}")
        names = {field.name for field in dataclasses.fields(cls)}
        ignored = sorted(set(config) - names)
        if ignored:
            logger.debug("config keys not used by the Keras encoder: %s", ignored)
        kwargs = {key: value for key, value in config.items() if key in names}
        if kwargs.get("windows") is not None:
            kwargs["windows"] = tuple(kwargs["windows"])
        return cls(**kwargs)

    def encoder_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of :class:`ulmfit_keras.ULMFiTEncoder`."""
        return {
            "arch": self.arch,
            "vocab_size": self.vocab_size,
            "emb_size": self.emb_size,
            "hidden_size": self.hidden_size,
            "n_layers": self.n_layers,
            "pad_id": self.pad_id,
            "input_p": self.input_p,
            "weight_p": self.weight_p,
            "embed_p": self.embed_p,
            "hidden_p": self.hidden_p,
            "windows": None if self.windows is None else list(self.windows),
            "zoneout": self.zoneout,
        }

    def head_kwargs(self) -> dict[str, Any]:
        """Arguments of :class:`ulmfit_keras.ULMFiTLanguageModel` besides the backbone."""
        return {
            "tie_weights": self.tie_weights,
            "output_p": self.output_p,
            "out_bias": self.out_bias,
        }

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["windows"] = None if self.windows is None else list(self.windows)
        return data


def read_config(path: str | os.PathLike) -> EncoderConfig:
    """Read a ``config.json`` / ``EXP.json`` file into an :class:`EncoderConfig`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"model config {path} not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a JSON model config ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a model config must be a JSON object")
    try:
        return EncoderConfig.from_any(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
