"""The weight-mapping table: fastai state-dict keys -> Keras variable paths, with transforms.

One declarative table per architecture (transformers' ``STATE_DICT_MAPPING`` style). Rows are
``fastai key(s) -> Keras variable -> transform -> when``; ``{l}`` stands for the recurrent
layer index. Keys joined by ``+`` are combined by the transform (the LSTM bias is
``bias_ih + bias_hh``). Which keys a file holds, and which it may hold without them being
converted, is :mod:`ulmfit_torch.fastai_keys`' business (the one reader,
:func:`ulmfit_torch.state_dict.read_lm_state`, checks them); :func:`weight_plan` checks that this
table reads exactly the keys the reader keeps.

:func:`port_weights` applies a table strictly (keras-hub's ``port_weight`` style): one named
Keras variable at a time, never a positional ``set_weights`` list. Every Keras variable must be
assigned exactly once, and any shape disagreement raises; the error names the key(s).

The model's architecture comes from its :class:`~ulmfit_core.lm_config.LMConfig`. This module
needs neither TensorFlow nor fastai (the Keras model is only duck-typed).
"""

# The tables below are column-aligned on purpose (one row per mapping, read across).
# ruff: noqa: E501

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import LMConfig
from ulmfit_torch.fastai_keys import (
    LAYOUTS,
    IgnoredKey,
    applies,
    as_numpy,
    ignored_keys,
    model_keys,
    source_arrays,
)
from ulmfit_torch.state_dict import LMState

logger = logging.getLogger(__name__)

__all__ = [
    "RULES",
    "TRANSFORMS",
    "Assignment",
    "WeightPlan",
    "port_weights",
    "weight_plan",
]

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

RULES = {
    "awd-lstm": _AWD_LSTM_RULES,
    "qrnn": _AWD_QRNN_RULES,
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


def weight_plan(layout: str, config: LMConfig) -> WeightPlan:
    """Expand the table for a ``config`` model read from a ``layout`` file.

    Raises:
        ValueError: an unknown layout, or one that does not hold ``config.arch``.
        AssertionError: the table does not read exactly the keys the reader keeps (a bug).
    """
    if LAYOUTS.get(layout) != config.arch:
        raise ValueError(
            f"checkpoint layout {layout!r} does not hold an {config.arch} model; "
            f"known: {sorted(LAYOUTS)}"
        )
    assignments = []
    for sources, target, transform, when in RULES[config.arch]:
        if not applies(when, config):
            continue
        keys = [key.strip() for key in sources.split("+")]
        if len(keys) != _TRANSFORM_ARITY[transform]:
            raise AssertionError(f"table row {sources!r}: {transform} takes other inputs")
        for layer in range(config.n_layers if "{l}" in target else 1):
            tag = str(layer)
            row_keys = tuple(key.replace("{l}", tag) for key in keys)
            assignments.append(Assignment(row_keys, target.replace("{l}", tag), transform))
    plan = WeightPlan(layout, tuple(assignments), tuple(ignored_keys(layout, config)))
    sources = plan.source_keys
    if len(set(sources)) != len(sources) or len(set(plan.targets)) != len(plan.targets):
        raise AssertionError(f"the {config.arch} table uses a key or a variable twice")
    if sorted(sources) != sorted(model_keys(layout, config)):
        raise AssertionError(
            f"the {config.arch} table reads {sorted(sources)}, but a {layout} file holds "
            f"{sorted(model_keys(layout, config))}"
        )
    return plan


# ---------------------------------------------------------------------------------------------
# Porting
# ---------------------------------------------------------------------------------------------


def port_weights(state: LMState, model: Any) -> WeightPlan:
    """Assign every Keras variable of ``model`` from ``state`` through the table.

    Args:
        state: the read fastai state dict (:func:`ulmfit_torch.state_dict.read_lm_state`).
        model: the Keras LM (``build_encoder(config)[1]``); its variables are found by path.

    Returns:
        The expanded plan that was applied.

    Raises:
        InputError: a mis-shaped key (named in the message).
        RuntimeError: a Keras variable the table does not assign, or a table target the model
            lacks (a bug in the table or the model, not in the file).
    """
    plan = weight_plan(state.layout.name, state.config)
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
        value = TRANSFORMS[row.transform](source_arrays(state.tensors, row.sources))
        variable = variables[row.target]
        want = tuple(int(d) for d in variable.shape)
        if tuple(value.shape) != want:
            shapes = ", ".join(
                f"{key} {tuple(as_numpy(state.tensors[key]).shape)}" for key in row.sources
            )
            raise InputError(
                f"{state.source}: {shapes} -> {row.transform} gives {tuple(value.shape)}, but "
                f"Keras variable {row.target} has shape {want} for this architecture"
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
        list(state.ignored) or "nothing",
    )
    return plan
