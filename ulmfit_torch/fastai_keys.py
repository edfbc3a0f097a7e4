"""The key families of fastai language-model state dicts: the keys each layout holds or ignores.

A fastai ``SequentialRNN(AWD_LSTM | AWD_QRNN, LinearDecoder)`` saves its parameters under these
keys (``{l}`` stands for the recurrent layer index). One table per key family lists the keys the
model's parameters come from; a second one the keys that are read but deliberately not used,
with the reason and, where it applies, a key whose value they must repeat. :func:`check_keys`
applies them strictly: every key of a file is used or listed as ignored, every used key is
there, and an ignored copy that differs from what it copies is an error.

The three families (names as they appear in a conversion's ``config.json``):

* ``fastai-2.8-awd-lstm``: fastai 2.8's AWD-LSTM (``WeightDropout`` keeps ``weight_hh_l0_raw``);
* ``fastai-2.2.7-awd-lstm``: the same, plus the stale ``module.weight_hh_l0`` copy that older
  ``WeightDropout`` wrote;
* ``fastai-2.2.7-awd-qrnn``: fastai 2.2.7's AWD-QRNN (the linear's ``module.weight`` copy may
  appear).

Standard library, numpy and :mod:`ulmfit_core` only: tensors are read through their
``detach().cpu().numpy()`` methods, so torch itself is not imported here.
"""

# The tables below are column-aligned on purpose (one row per key, read across).
# ruff: noqa: E501

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import LMConfig

__all__ = [
    "FASTAI_28_AWD_LSTM",
    "FASTAI_227_AWD_LSTM",
    "FASTAI_227_AWD_QRNN",
    "IGNORED",
    "LAYOUTS",
    "MODEL_KEYS",
    "IgnoredKey",
    "applies",
    "as_numpy",
    "check_keys",
    "ignored_keys",
    "model_keys",
    "source_arrays",
]

FASTAI_28_AWD_LSTM = "fastai-2.8-awd-lstm"
FASTAI_227_AWD_LSTM = "fastai-2.2.7-awd-lstm"
FASTAI_227_AWD_QRNN = "fastai-2.2.7-awd-qrnn"
# The architecture each key family holds.
LAYOUTS = {
    FASTAI_28_AWD_LSTM: "awd-lstm",
    FASTAI_227_AWD_LSTM: "awd-lstm",
    FASTAI_227_AWD_QRNN: "qrnn",
}

# ---------------------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------------------
# when: "always"; "untied" (the decoder has its own matrix); "out_bias" (the decoder has a bias);
# "tied" (the decoder is the embedding).

_AWD_LSTM_KEYS = (
    # fastai key                                   when
    ("0.encoder.weight",                           "always"),
    ("0.rnns.{l}.module.weight_ih_l0",             "always"),
    ("0.rnns.{l}.weight_hh_l0_raw",                "always"),
    ("0.rnns.{l}.module.bias_ih_l0",               "always"),
    ("0.rnns.{l}.module.bias_hh_l0",               "always"),
    ("1.decoder.weight",                           "untied"),
    ("1.decoder.bias",                             "out_bias"),
)  # fmt: skip

_AWD_QRNN_KEYS = (
    # fastai key                                   when
    ("0.encoder.weight",                           "always"),
    ("0.rnns.{l}.layers.0.linear.weight_raw",      "always"),
    ("0.rnns.{l}.layers.0.linear.module.bias",     "always"),
    ("1.decoder.weight",                           "untied"),
    ("1.decoder.bias",                             "out_bias"),
)  # fmt: skip

# Read but not used. "must equal": a key whose value it must repeat (checked, else an error).
_IGNORED_ALWAYS = (
    # fastai key                                   when      must equal          why
    ("0.encoder_dp.emb.weight",                    "always", "0.encoder.weight", "EmbeddingDropout's reference to the embedding"),
    ("1.decoder.weight",                           "tied",   "0.encoder.weight", "the tied decoder is the embedding"),
)  # fmt: skip

_IGNORED_DROPPED_LSTM = (
    ("0.rnns.{l}.module.weight_hh_l0",             "always", None,               "WeightDropout's last dropped copy of weight_hh_l0_raw"),
)  # fmt: skip

_IGNORED_DROPPED_QRNN = (
    ("0.rnns.{l}.layers.0.linear.module.weight",   "always", None,               "WeightDropout's last dropped copy of weight_raw"),
)  # fmt: skip

MODEL_KEYS = {
    FASTAI_28_AWD_LSTM: _AWD_LSTM_KEYS,
    FASTAI_227_AWD_LSTM: _AWD_LSTM_KEYS,
    FASTAI_227_AWD_QRNN: _AWD_QRNN_KEYS,
}
# Ignored keys may be absent (a file without them reads the same).
IGNORED = {
    FASTAI_28_AWD_LSTM: _IGNORED_ALWAYS,
    FASTAI_227_AWD_LSTM: _IGNORED_ALWAYS + _IGNORED_DROPPED_LSTM,
    FASTAI_227_AWD_QRNN: _IGNORED_ALWAYS + _IGNORED_DROPPED_QRNN,
}


@dataclass(frozen=True)
class IgnoredKey:
    """A key that is read but not used; ``equals`` names a key it must be equal to."""

    key: str
    equals: str | None
    why: str


def applies(when: str, config: LMConfig) -> bool:
    """Whether a table row marked ``when`` holds for a model of ``config``."""
    return {
        "always": True,
        "tied": config.tie_weights,
        "untied": not config.tie_weights,
        "out_bias": config.out_bias,
    }[when]


def expand(template: str, n_layers: int) -> list[str]:
    """``template`` once, or once per recurrent layer when it holds ``{l}``."""
    if "{l}" not in template:
        return [template]
    return [template.replace("{l}", str(layer)) for layer in range(n_layers)]


def _check_layout(layout: str) -> None:
    if layout not in MODEL_KEYS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; known: {sorted(MODEL_KEYS)}")


def model_keys(layout: str, config: LMConfig) -> list[str]:
    """The keys the parameters of a ``config`` model come from in a ``layout`` file, in table
    order (each once)."""
    _check_layout(layout)
    return [
        key
        for template, when in MODEL_KEYS[layout]
        if applies(when, config)
        for key in expand(template, config.n_layers)
    ]


def ignored_keys(layout: str, config: LMConfig) -> list[IgnoredKey]:
    """The keys a ``layout`` file of a ``config`` model may hold without them being used."""
    _check_layout(layout)
    return [
        IgnoredKey(key, equals, why)
        for template, when, equals, why in IGNORED[layout]
        if applies(when, config)
        for key in expand(template, config.n_layers)
    ]


# ---------------------------------------------------------------------------------------------
# Checking a state dict against the tables
# ---------------------------------------------------------------------------------------------

_BIDIRECTIONAL = re.compile(r"(_reverse$|\.layers_bwd\.)")


def check_keys(
    state_dict: Mapping[str, Any], layout: str, config: LMConfig, source: str
) -> list[str]:
    """Raise :class:`InputError` naming missing or unknown keys, or a changed ignored copy.

    Args:
        state_dict: the file's model state dict (torch tensors or arrays).
        layout: its key family.
        config: the model it holds (layers, tie, bias).
        source: the file, for messages.

    Returns:
        The keys used, in table order.
    """
    used = model_keys(layout, config)
    ignored = ignored_keys(layout, config)
    consumed = set(used)
    ignorable = {item.key for item in ignored}
    missing = [key for key in used if key not in state_dict]
    unknown = sorted(key for key in state_dict if key not in consumed | ignorable)
    if missing:
        raise InputError(
            f"{source}: missing state-dict keys {missing} for the {layout} layout "
            f"(the file is incomplete, or not a fastai language model of that layout)"
        )
    if unknown:
        hint = ""
        if any(_BIDIRECTIONAL.search(key) for key in unknown):
            hint = " (bidirectional encoders are not supported)"
        raise InputError(
            f"{source}: unknown state-dict keys {unknown} in a {layout} checkpoint{hint}; "
            "every tensor must be converted or explicitly ignored"
        )
    for item in ignored:
        if item.equals is None or item.key not in state_dict:
            continue
        if not _equal(state_dict[item.key], state_dict[item.equals]):
            raise InputError(
                f"{source}: {item.key} should be {item.why} and equal {item.equals}, "
                "but it differs; refusing to guess which one the model used"
            )
    return used


def _equal(a: Any, b: Any) -> bool:
    a, b = as_numpy(a), as_numpy(b)
    return a.shape == b.shape and bool(np.array_equal(a, b))


def as_numpy(value: Any) -> np.ndarray:
    """A torch tensor (on any device, bfloat16 included) or an array as a numpy array."""
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not needed here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def source_arrays(state_dict: Mapping[str, Any], keys: Iterable[str]) -> list[np.ndarray]:
    """The tensors of ``keys`` as float32 numpy arrays."""
    return [as_numpy(state_dict[key]).astype(np.float32, copy=False) for key in keys]
