"""The concat-pooling head shared by the classifier and the regressor (fastai's ``LinBnDrop``s).

Why BatchNorm failed in the predecessor (tf2qrnn's ``heads.py`` / ``ConcatPooler``), and what is
done here:

* it copied PyTorch's ``momentum=0.1`` into Keras, where the convention is reversed
  (Keras ``moving = momentum * moving + (1 - momentum) * batch``): its moving statistics were
  90 % the last training batch, so inference ran on one batch's noisy statistics. Here BatchNorm
  uses Keras ``momentum=0.9`` (= PyTorch 0.1) and ``epsilon=1e-5``;
* its fixed-length pooler took ``x[:, -1]`` and max/mean over all positions, padding included,
  so the pooled features (and BatchNorm's statistics) depended on how much padding a batch had.
  :class:`~ulmfit_keras.MaskedConcatPool` reads only valid positions;
* a pooling layer that lets the encoder's ``(batch, seq)`` Keras mask through hands it to
  ``BatchNormalization`` over ``(batch, features)``, which Keras 3 rejects (its mask must have one
  dimension less than the input). :class:`~ulmfit_keras.MaskedConcatPool` consumes the mask and
  returns none.

Dropout, BatchNorm and the rest follow Keras' ``training`` flag as ``model.fit`` /
``model.predict`` set it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from ulmfit_keras.layers.masked_concat_pool import MaskedConcatPool
from ulmfit_keras.models.task_model import TaskModel

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "KEEP",
    "POOLING_NAME",
    "PooledTaskModel",
    "check_keep",
    "pooled_mlp",
]

POOLING_NAME = "concat_pooling"
# PyTorch BatchNorm1d defaults (fastai's head): momentum 0.1 == Keras momentum 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# What a long text's pooling sees: "first", the text as given (a caller cuts it to its
# max_seq_len from the front); "last", fastai's SentenceEncoder window (MaskedConcatPool).
KEEP = ("first", "last")


def pooled_mlp(
    x,
    hidden_dim: int,
    dropout: Sequence[float],
    use_batch_norm: bool,
    seed: int | None,
    *,
    pool_max_len: int | None = None,
    bptt: int = 72,
    bn_momentum: float = BN_MOMENTUM,
    bn_epsilon: float = BN_EPSILON,
):
    """fastai's two ``LinBnDrop`` blocks up to the hidden layer; returns the pre-output tensor.

    ``pool_max_len``/``bptt``: :class:`MaskedConcatPool`'s window (``None``: the whole text).
    ``bn_momentum`` is Keras' (PyTorch's ``1 - momentum``).
    """
    x = MaskedConcatPool(max_len=pool_max_len, bptt=bptt, name=POOLING_NAME)(x)
    if use_batch_norm:
        x = keras.layers.BatchNormalization(
            momentum=bn_momentum, epsilon=bn_epsilon, name="head_batch_norm_0"
        )(x)
    x = keras.layers.Dropout(dropout[0], seed=seed, name="head_dropout_0")(x)
    x = keras.layers.Dense(hidden_dim, activation="relu", name="head_dense")(x)
    if use_batch_norm:
        x = keras.layers.BatchNormalization(
            momentum=bn_momentum, epsilon=bn_epsilon, name="head_batch_norm_1"
        )(x)
    seed_1 = None if seed is None else seed + 1
    return keras.layers.Dropout(dropout[1], seed=seed_1, name="head_dropout_1")(x)


def check_dropout(dropout: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(p) for p in dropout)
    if len(values) != 2 or not all(0.0 <= p < 1.0 for p in values):
        raise ValueError(f"dropout must be two rates in [0, 1), got {list(dropout)}")
    return values


def check_keep(keep: str) -> str:
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {', '.join(KEEP)}, got {keep!r}")
    return keep


class PooledTaskModel(TaskModel):
    """Shared config of the pooled heads (a functional model over the backbone)."""

    def _task_config(self) -> dict[str, Any]:
        return {
            **super()._task_config(),
            "hidden_dim": self.hidden_dim,
            "dropout": list(self.dropout),
            "use_batch_norm": self.use_batch_norm,
            "seed": self.seed,
        }
