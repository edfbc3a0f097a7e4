"""Tagging metrics: token accuracy over scored positions (a Keras metric) and entity-level F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from ulmfit_keras.word_alignment import IGNORE_LABEL

__all__ = ["MaskedSparseCategoricalAccuracy", "entity_f1", "iob_entities"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class MaskedSparseCategoricalAccuracy(keras.metrics.Mean):
    """Token accuracy over positions whose label is not ``ignore_label``."""

    def __init__(
        self,
        ignore_label: int = IGNORE_LABEL,
        name: str = "masked_accuracy",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        self.ignore_label = int(ignore_label)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        keep = ops.cast(ops.not_equal(y_true, self.ignore_label), "float32")
        correct = ops.cast(
            ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32"
        )
        if sample_weight is not None:  # e.g. the padding mask Keras passes along
            keep = keep * ops.cast(ops.reshape(sample_weight, ops.shape(keep)), "float32")
        return super().update_state(correct, sample_weight=keep)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "ignore_label": self.ignore_label}


def iob_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities ``(type, start, end_exclusive)`` of an IOB/IOB2 tag sequence (conlleval rules).

    ``B-X`` starts an entity; ``I-X`` continues an entity of type ``X`` and starts one when it
    follows ``O`` or another type; ``O`` ends the current entity.
    """
    entities: set[tuple[str, int, int]] = set()
    current: tuple[str, int] | None = None
    for i, tag in enumerate([*tags, "O"]):  # a final "O" closes the last entity
        prefix, _, kind = tag.partition("-")
        if prefix not in ("B", "I", "O") or (prefix != "O" and not kind):
            raise ValueError(f"not an IOB tag: {tag!r}")
        continues = prefix == "I" and current is not None and current[0] == kind
        if not continues:
            if current is not None:
                entities.add((current[0], current[1], i))
            current = (kind, i) if prefix != "O" else None
    return entities


def entity_f1(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Micro entity-level precision, recall and F1 over sentences (exact type and span match).

    Returns ``{"precision", "recall", "f1", "gold", "predicted", "correct"}``; ratios with a
    zero denominator are 0.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    n_gold = n_pred = n_correct = 0
    for g_tags, p_tags in zip(gold, predicted, strict=True):
        if len(g_tags) != len(p_tags):
            raise ValueError(f"tag sequences differ in length: {len(g_tags)} vs {len(p_tags)}")
        g, p = iob_entities(g_tags), iob_entities(p_tags)
        n_gold, n_pred, n_correct = n_gold + len(g), n_pred + len(p), n_correct + len(g & p)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "gold": float(n_gold),
        "predicted": float(n_pred),
        "correct": float(n_correct),
    }
