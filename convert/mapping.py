"""The weight-mapping table: fastai state-dict keys -> Keras variable paths, with transforms.

One declarative table per checkpoint layout (transformers' ``STATE_DICT_MAPPING`` style). Rows
are ``fastai key(s) -> Keras variable -> transform [-> when]``; ``{l}`` stands for the recurrent
layer index. Keys joined by ``+`` are combined by the transform (the LSTM bias is
``bias_ih + bias_hh``). A second table lists the keys that are read but deliberately not
converted, with the reason and, where it applies, a check that they hold nothing new.

:func:`port_weights` applies a table strictly (keras-hub's ``port_weight`` style): one named
Keras variable at a time, never a positional ``set_weights`` list. Every source tensor must be
used once or be listed as ignored, every Keras variable must be assigned exactly once, and
any shape disagreement raises; the error names the key(s).

This module needs neither TensorFlow nor fastai: the torch reference of :mod:`convert.reference`
loads the same key set, so both sides read the file through this table.
"""

# The tables below are column-aligned on purpose (one row per mapping, read across).
# ruff: noqa: E501

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ulmfit_core.errors import InputError

if TYPE_CHECKING:
    from convert.layout import CheckpointLayout

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORED",
    "LAYOUTS",
    "RULES",
    "TRANSFORMS",
    "Assignment",
    "IgnoredKey",
    "WeightPlan",
    "port_weights",
    "source_arrays",
    "weight_plan",
]

FASTAI_28_AWD_LSTM = "fastai-2.8-awd-lstm"
FASTAI_227_AWD_LSTM = "fastai-2.2.7-awd-lstm"
FASTAI_227_AWD_QRNN = "fastai-2.2.7-awd-qrnn"
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

_AWD_LSTM_RULES = (
    # fastai key(s)                                                 Keras variable                         transform    when
    ("0.encoder.weight",                                            "encoder_embedding/embeddings",        "identity",  "always"),
    ("0.rnns.{l}.module.weight_ih_l0",                              "lstm_{l}/lstm_cell/kernel",           "transpose", "always"),
    ("0.rnns.{l}.weight_hh_l0_raw",                                 "lstm_{l}/lstm_cell/recurrent_kernel", "transpose", "always"),
    ("0.rnns.{l}.module.bias_ih_l0 + 0.rnns.{l}.module.bias_hh_l0", "lstm_{l}/lstm_cell/bias",             "sum",       "always"),
    ("1.decoder.weight",                                            "lm_head/kernel",                      "transpose", "untied"),
    ("1.decoder.bias",                                              "lm_head/bias",                        "identity",  "out_bias"),
)  # fmt: skip

_AWD_QRNN_RULES = (
    # fastai key(s)                                                 Keras variable                         transform    when
    ("0.encoder.weight",                                            "encoder_embedding/embeddings",        "identity",  "always"),
    ("0.rnns.{l}.layers.0.linear.weight_raw",                       "qrnn_{l}/kernel",                     "transpose", "always"),
    ("0.rnns.{l}.layers.0.linear.module.bias",                      "qrnn_{l}/bias",                       "identity",  "always"),
    ("1.decoder.weight",                                            "lm_head/kernel",                      "transpose", "untied"),
    ("1.decoder.bias",                                              "lm_head/bias",                        "identity",  "out_bias"),
)  # fmt: skip

# Read but not converted. "must equal": a key whose value it must repeat (checked, else an error).
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

RULES = {
    FASTAI_28_AWD_LSTM: _AWD_LSTM_RULES,
    FASTAI_227_AWD_LSTM: _AWD_LSTM_RULES,
    FASTAI_227_AWD_QRNN: _AWD_QRNN_RULES,
}
# Ignored keys may be absent (a file without them converts the same).
IGNORED = {
    FASTAI_28_AWD_LSTM: _IGNORED_ALWAYS,
    FASTAI_227_AWD_LSTM: _IGNORED_ALWAYS + _IGNORED_DROPPED_LSTM,
    FASTAI_227_AWD_QRNN: _IGNORED_ALWAYS + _IGNORED_DROPPED_QRNN,
}


def _identity(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0]


def _transpose(arrays: list[np.ndarray]) -> np.ndarray:
    # torch stores (out, in); Keras kernels are (in, out). A contiguous copy for assign().
    return np.ascontiguousarray(arrays[0].T)


def _sum(arrays: list[np.ndarray]) -> np.ndarray:
    # Keras' LSTM has one bias; PyTorch's adds b_ih and b_hh (the predecessor used 2*b_ih).
    return np.sum(np.stack(arrays), axis=0, dtype=np.float32)


TRANSFORMS: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "identity": _identity,
    "transpose": _transpose,
    "sum": _sum,
}
_TRANSFORM_ARITY = {"identity": 1, "transpose": 1, "sum": 2}


# ---------------------------------------------------------------------------------------------
# Expanding a table for one model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """One concrete row: the source keys, the Keras variable path and the transform."""

    sources: tuple[str, ...]
    target: str
    transform: str


@dataclass(frozen=True)
class IgnoredKey:
    """A key that is read but not converted; ``equals`` names a key it must be equal to."""

    key: str
    equals: str | None
    why: str


@dataclass(frozen=True)
class WeightPlan:
    """A table expanded for one model: what each source key becomes, or why it is ignored."""

    layout: str
    assignments: tuple[Assignment, ...]
    ignored: tuple[IgnoredKey, ...]

    @property
    def source_keys(self) -> list[str]:
        """Every key an assignment reads, in table order (each exactly once)."""
        return [key for row in self.assignments for key in row.sources]

    @property
    def targets(self) -> list[str]:
        return [row.target for row in self.assignments]

    def describe(self) -> str:
        """The expanded table as aligned text (for ``--verbose`` logs and error messages)."""
        width = max(len(" + ".join(row.sources)) for row in self.assignments)
        target_width = max(len(row.target) for row in self.assignments)
        lines = [
            f"{' + '.join(row.sources):<{width}}  ->  {row.target:<{target_width}}  "
            f"({row.transform})"
            for row in self.assignments
        ]
        lines += [f"{item.key:<{width}}  ignored: {item.why}" for item in self.ignored]
        return "\n".join(lines)


def _applies(when: str, tie_weights: bool, out_bias: bool) -> bool:
    return {
        "always": True,
        "tied": tie_weights,
        "untied": not tie_weights,
        "out_bias": out_bias,
    }[when]


def _expand(template: str, n_layers: int) -> list[str]:
    if "{l}" not in template:
        return [template]
    return [template.replace("{l}", str(layer)) for layer in range(n_layers)]


def weight_plan(layout: str, n_layers: int, tie_weights: bool, out_bias: bool) -> WeightPlan:
    """Expand the table of ``layout`` for a model with ``n_layers`` recurrent layers."""
    if layout not in RULES:
        raise ValueError(f"unknown checkpoint layout {layout!r}; known: {sorted(RULES)}")
    assignments = []
    for sources, target, transform, when in RULES[layout]:
        if not _applies(when, tie_weights, out_bias):
            continue
        keys = [key.strip() for key in sources.split("+")]
        if len(keys) != _TRANSFORM_ARITY[transform]:
            raise AssertionError(f"table row {sources!r}: {transform} takes other inputs")
        for layer in range(n_layers if "{l}" in target else 1):
            tag = str(layer)
            row_keys = tuple(key.replace("{l}", tag) for key in keys)
            assignments.append(Assignment(row_keys, target.replace("{l}", tag), transform))
    ignored = [
        IgnoredKey(key, equals, why)
        for template, when, equals, why in IGNORED[layout]
        if _applies(when, tie_weights, out_bias)
        for key in _expand(template, n_layers)
    ]
    plan = WeightPlan(layout, tuple(assignments), tuple(ignored))
    sources = plan.source_keys
    if len(set(sources)) != len(sources) or len(set(plan.targets)) != len(plan.targets):
        raise AssertionError(f"the {layout} table uses a key or a variable twice")
    return plan


# ---------------------------------------------------------------------------------------------
# Checking a state dict against a plan
# ---------------------------------------------------------------------------------------------

_BIDIRECTIONAL = re.compile(r"(_reverse$|\.layers_bwd\.)")


def check_keys(state_dict: Mapping[str, Any], plan: WeightPlan, source: str) -> None:
    """Raise :class:`InputError` naming missing or unknown keys, or a changed ignored copy.

    Args:
        state_dict: the file's model state dict (torch tensors or arrays).
        plan: the expanded table.
        source: the file, for messages.
    """
    consumed = set(plan.source_keys)
    ignorable = {item.key for item in plan.ignored}
    missing = [key for key in plan.source_keys if key not in state_dict]
    unknown = sorted(key for key in state_dict if key not in consumed | ignorable)
    if missing:
        raise InputError(
            f"{source}: missing state-dict keys {missing} for the {plan.layout} layout "
            f"(the file is incomplete, or not a fastai language model of that layout)"
        )
    if unknown:
        hint = ""
        if any(_BIDIRECTIONAL.search(key) for key in unknown):
            hint = " (bidirectional encoders are not supported)"
        raise InputError(
            f"{source}: unknown state-dict keys {unknown} in a {plan.layout} checkpoint{hint}; "
            "every tensor must be converted or explicitly ignored"
        )
    for item in plan.ignored:
        if item.equals is None or item.key not in state_dict:
            continue
        if not _equal(state_dict[item.key], state_dict[item.equals]):
            raise InputError(
                f"{source}: {item.key} should be {item.why} and equal {item.equals}, "
                "but it differs; refusing to guess which one the model used"
            )


def _equal(a: Any, b: Any) -> bool:
    a, b = _as_numpy(a), _as_numpy(b)
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not needed here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def source_arrays(state_dict: Mapping[str, Any], keys: Iterable[str]) -> list[np.ndarray]:
    """The tensors of ``keys`` as float32 numpy arrays."""
    return [_as_numpy(state_dict[key]).astype(np.float32, copy=False) for key in keys]


# ---------------------------------------------------------------------------------------------
# Porting
# ---------------------------------------------------------------------------------------------


def port_weights(
    state_dict: Mapping[str, Any],
    model: Any,
    layout: CheckpointLayout,
    source: str = "checkpoint",
) -> WeightPlan:
    """Assign every Keras variable of ``model`` from ``state_dict`` through the layout's table.

    Args:
        state_dict: the fastai model state dict.
        model: the Keras LM (``build_encoder(config)[1]``); its variables are found by path.
        layout: what :func:`convert.layout.detect_layout` found (layout name, layers, tie, bias).
        source: the file, for messages.

    Returns:
        The expanded plan that was applied.

    Raises:
        InputError: a missing, unknown or mis-shaped key (named in the message).
        RuntimeError: a Keras variable the table does not assign, or a table target the model
            lacks (a bug in the table or the model, not in the file).
    """
    plan = weight_plan(layout.name, layout.n_layers, layout.tie_weights, layout.out_bias)
    check_keys(state_dict, plan, source)
    variables = {}
    for variable in model.weights:
        if variable.path in variables:
            raise RuntimeError(f"two Keras variables share the path {variable.path!r}")
        variables[variable.path] = variable
    absent = [target for target in plan.targets if target not in variables]
    unassigned = sorted(set(variables) - set(plan.targets))
    if absent or unassigned:
        raise RuntimeError(
            f"the {plan.layout} table does not match the Keras model: targets without a "
            f"variable {absent}, variables without a row {unassigned}"
        )
    assigned: set[str] = set()
    for row in plan.assignments:
        value = TRANSFORMS[row.transform](source_arrays(state_dict, row.sources))
        variable = variables[row.target]
        want = tuple(int(d) for d in variable.shape)
        if tuple(value.shape) != want:
            shapes = ", ".join(
                f"{key} {tuple(_as_numpy(state_dict[key]).shape)}" for key in row.sources
            )
            raise InputError(
                f"{source}: {shapes} -> {row.transform} gives {tuple(value.shape)}, but Keras "
                f"variable {row.target} has shape {want} for this architecture"
            )
        variable.assign(value)
        assigned.add(row.target)
        logger.debug("%s -> %s %s (%s)", " + ".join(row.sources), row.target, want, row.transform)
    if assigned != set(variables):  # unreachable after the checks above; kept as the invariant
        raise RuntimeError(f"unassigned Keras variables: {sorted(set(variables) - assigned)}")
    logger.info(
        "ported %d tensors into %d Keras variables (%s); ignored %s",
        len(plan.source_keys),
        len(assigned),
        plan.layout,
        sorted(item.key for item in plan.ignored if item.key in state_dict) or "nothing",
    )
    return plan
