"""The classifier head's weight-mapping table: fastai ``PoolingLinearClassifier`` -> Keras.

The encoder is ported by the LM table (:func:`convert.mapping.port_weights`); this table maps
the head of ``ULMFiTClassifier`` (``head_batch_norm_0`` -> ``head_dense`` ->
``head_batch_norm_1`` -> ``predictions``) from fastai's two ``LinBnDrop`` blocks. Sources are
``(block, part)``: a BatchNorm array or the block's ``linear`` weight. fastai's Linear layers
have no bias (BatchNorm precedes them); the Keras Dense layers do, and get zeros.

BatchNorm: the running statistics are the moving ones; ``eps`` and momentum are layer settings,
not variables, so they are set when the Keras classifier is built (PyTorch's momentum ``m`` is
Keras' ``1 - m``) and checked here, because a wrong ``eps`` changes every prediction and a wrong
momentum every later fine-tuning step.
"""

# The table is column-aligned on purpose (one row per mapping, read across).
# ruff: noqa: E501

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ulmfit_torch.classifier_state import ClassifierState

__all__ = ["HEAD_RULES", "port_head"]

HEAD_RULES = (
    # (block, part)                  Keras variable                        transform
    ((0, "weight"),                   "head_batch_norm_0/gamma",            "identity"),
    ((0, "bias"),                     "head_batch_norm_0/beta",             "identity"),
    ((0, "running_mean"),             "head_batch_norm_0/moving_mean",      "identity"),
    ((0, "running_var"),              "head_batch_norm_0/moving_variance",  "identity"),
    ((0, "linear"),                   "head_dense/kernel",                  "transpose"),
    (None,                            "head_dense/bias",                    "zeros"),
    ((1, "weight"),                   "head_batch_norm_1/gamma",            "identity"),
    ((1, "bias"),                     "head_batch_norm_1/beta",             "identity"),
    ((1, "running_mean"),             "head_batch_norm_1/moving_mean",      "identity"),
    ((1, "running_var"),              "head_batch_norm_1/moving_variance",  "identity"),
    ((1, "linear"),                   "predictions/kernel",                 "transpose"),
    (None,                            "predictions/bias",                   "zeros"),
)  # fmt: skip

_BATCH_NORMS = ("head_batch_norm_0", "head_batch_norm_1")


def _source(state: ClassifierState, source: tuple[int, str]) -> np.ndarray:
    block, part = source
    return state.blocks[block].linear if part == "linear" else state.blocks[block].batch_norm[part]


def port_head(state: ClassifierState, model: Any) -> list[tuple[str, str]]:
    """Assign the Keras classifier's head variables from ``state`` (every one exactly once).

    Returns:
        ``(source, target)`` per row, for the log.

    Raises:
        RuntimeError: the model's head differs from the table (its variables, its shapes, or its
            BatchNorm settings differ from the sidecar's): a bug in the builder, not the file.
    """
    head_names = {row[1].split("/")[0] for row in HEAD_RULES}
    variables = {v.path: v for v in model.weights if v.path.split("/")[0] in head_names}
    targets = [row[1] for row in HEAD_RULES]
    if sorted(variables) != sorted(targets):
        raise RuntimeError(
            f"the head table does not match the Keras classifier: variables {sorted(variables)}, "
            f"table {sorted(targets)}"
        )
    for name in _BATCH_NORMS:
        layer = model.get_layer(name)
        want_eps, want_momentum = state.head.bn_eps, 1.0 - state.head.bn_momentum
        if not (
            math.isclose(layer.epsilon, want_eps, rel_tol=1e-6)
            and math.isclose(layer.momentum, want_momentum, rel_tol=1e-6)
        ):
            raise RuntimeError(
                f"{name}: epsilon {layer.epsilon}, momentum {layer.momentum}; the fastai head "
                f"needs epsilon {want_eps}, momentum {want_momentum} (= 1 - {state.head.bn_momentum})"
            )
    done = []
    for source, target, transform in HEAD_RULES:
        variable = variables[target]
        shape = tuple(int(d) for d in variable.shape)
        if transform == "zeros":
            value = np.zeros(shape, np.float32)
        else:
            value = _source(state, source)
            value = np.ascontiguousarray(value.T) if transform == "transpose" else value
        if value.shape != shape:
            raise RuntimeError(f"{target}: the table gives {value.shape}, the model has {shape}")
        variable.assign(value)
        done.append((f"1.layers.{source[0]}.{source[1]}" if source else "zeros", target))
    return done
