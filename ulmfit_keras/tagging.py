"""Sequence tagging: word labels on subwords, a per-token head, a masked loss, entity-level F1.

Alignment of word-level labels to SentencePiece subwords, two schemes:

* ``"all"`` (the predecessor's): every subword of a word gets the word's label;
* ``"first"``: the first subword gets it, later subwords get ``ignore_label`` and count in neither
  the loss nor the metrics. Predictions are read back from each word's first subword.

BOS/EOS and padding get ``ignore_label`` too. :class:`MaskedSparseCategoricalCrossentropy` and
:class:`MaskedSparseCategoricalAccuracy` skip those positions; :class:`ULMFiTTagger` is a
per-token Dense head over the encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

# Loss.__call__ reads a mask attached to the per-token losses (keras.src: Keras is pinned, and
# this is the function Keras' own layers use; it has no public alias).
from keras.src.backend.common.masking import set_keras_mask

from ulmfit_keras.config import PAD_ID
from ulmfit_keras.heads_tasks import deserialize_backbone

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORE_LABEL",
    "SCHEMES",
    "AlignedSequence",
    "MaskedSparseCategoricalAccuracy",
    "MaskedSparseCategoricalCrossentropy",
    "ULMFiTTagger",
    "align_word_labels",
    "encode_words",
    "entity_f1",
    "iob_entities",
    "pad_aligned",
    "word_predictions",
]

IGNORE_LABEL = -100
SCHEMES = ("first", "all")


@dataclass(frozen=True)
class AlignedSequence:
    """One sentence as subwords.

    Attributes:
        token_ids: subword ids (with BOS/EOS when asked).
        labels: one label per subword; ``ignore_label`` where no label applies.
        word_starts: position of each word's first subword in ``token_ids``; ``-1`` for a word
            with no subword (empty encoding, or cut off by ``max_len``).
    """

    token_ids: tuple[int, ...]
    labels: tuple[int, ...]
    word_starts: tuple[int, ...]


def encode_words(
    encode: Callable[[list[str]], list[list[int]]], words: Sequence[str]
) -> list[list[int]]:
    """Subword ids of each word, e.g. ``encode_words(spm.encode, words)``.

    ``encode`` takes a list of strings and returns a list of id lists (SentencePiece's
    ``SentencePieceProcessor.encode`` does), called once for the sentence.
    """
    pieces = encode(list(words))
    if len(pieces) != len(words):
        raise ValueError(f"encode returned {len(pieces)} encodings for {len(words)} words")
    return [list(p) for p in pieces]


def align_word_labels(
    pieces_per_word: Sequence[Sequence[int]],
    word_labels: Sequence[int],
    scheme: str = "first",
    ignore_label: int = IGNORE_LABEL,
    bos_id: int | None = None,
    eos_id: int | None = None,
    max_len: int | None = None,
) -> AlignedSequence:
    """Spread word labels over the words' subwords.

    Args:
        pieces_per_word: the subword ids of each word (:func:`encode_words`).
        word_labels: one label per word.
        scheme: ``"first"`` (later subwords ignored) or ``"all"`` (every subword labelled).
        ignore_label: label of positions that are not scored.
        bos_id, eos_id: ids added at the start / end (labelled ``ignore_label``).
        max_len: keep at most this many ids (EOS is lost when a sentence is cut, as in the
            numericalizer); words starting beyond get ``word_starts == -1``.

    Raises:
        ValueError: unknown scheme, or not one label per word.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown alignment scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    if len(pieces_per_word) != len(word_labels):
        raise ValueError(f"{len(pieces_per_word)} words but {len(word_labels)} labels")
    ids: list[int] = []
    labels: list[int] = []
    starts: list[int] = []
    if bos_id is not None:
        ids.append(bos_id)
        labels.append(ignore_label)
    for pieces, label in zip(pieces_per_word, word_labels, strict=True):
        starts.append(len(ids) if pieces else -1)
        for k, piece in enumerate(pieces):
            ids.append(int(piece))
            labels.append(int(label) if k == 0 or scheme == "all" else ignore_label)
    if eos_id is not None:
        ids.append(eos_id)
        labels.append(ignore_label)
    if max_len is not None and len(ids) > max_len:
        ids, labels = ids[:max_len], labels[:max_len]
        starts = [s if s < max_len else -1 for s in starts]
    return AlignedSequence(tuple(ids), tuple(labels), tuple(starts))


def pad_aligned(
    sequences: Sequence[AlignedSequence],
    seq_len: int | None = None,
    pad_id: int = PAD_ID,
    ignore_label: int = IGNORE_LABEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Post-pad a batch: ``(ids, labels)`` int32 arrays, padding labelled ``ignore_label``."""
    length = seq_len or max((len(s.token_ids) for s in sequences), default=0)
    ids = np.full((len(sequences), length), pad_id, dtype=np.int32)
    labels = np.full((len(sequences), length), ignore_label, dtype=np.int32)
    for row, seq in enumerate(sequences):
        n = min(length, len(seq.token_ids))
        ids[row, :n] = seq.token_ids[:n]
        labels[row, :n] = seq.labels[:n]
    return ids, labels


def word_predictions(
    token_predictions: Sequence[int] | np.ndarray,
    word_starts: Sequence[int],
    missing: int = 0,
) -> list[int]:
    """One prediction per word, read at its first subword; ``missing`` for words without one."""
    preds = np.asarray(token_predictions)
    return [int(preds[s]) if 0 <= s < len(preds) else missing for s in word_starts]


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


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Per-token sparse cross-entropy averaged over positions whose label is not ignored.

    The per-token losses carry a Keras mask ``y_true != ignore_label``; Keras combines it with
    the model output's padding mask and averages over the positions left.

    Args:
        ignore_label: label of unscored positions (padding, BOS/EOS, later subwords).
        from_logits: ``y_pred`` are logits rather than probabilities.
    """

    def __init__(
        self,
        ignore_label: int = IGNORE_LABEL,
        from_logits: bool = False,
        name: str = "masked_sparse_categorical_crossentropy",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.ignore_label = int(ignore_label)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        keep = ops.not_equal(y_true, self.ignore_label)
        # Ignored labels are out of range for the cross-entropy: use class 0, then mask them.
        safe = ops.where(keep, y_true, ops.zeros_like(y_true))
        losses = keras.losses.sparse_categorical_crossentropy(
            safe, y_pred, from_logits=self.from_logits
        )
        losses = ops.where(keep, losses, ops.zeros_like(losses))
        set_keras_mask(losses, keep)
        return losses

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"ignore_label": self.ignore_label, "from_logits": self.from_logits})
        return config


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


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTTagger(keras.Model):
    """Sequence tagger: ``backbone`` -> Dropout -> per-token Dense(num_labels).

    Outputs ``(batch, seq, num_labels)`` probabilities (or logits with ``activation=None``)
    carrying the encoder's padding mask. Train with :class:`MaskedSparseCategoricalCrossentropy`
    on labels from :func:`align_word_labels` / :func:`pad_aligned`.

    Args:
        backbone: the encoder.
        num_labels: number of tags.
        dropout: dropout on the encoder outputs before the Dense.
        activation: of the output (``"softmax"``; ``None`` for logits).
        seed: seed of the dropout.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_labels: int,
        dropout: float = 0.1,
        activation: str | None = "softmax",
        seed: int | None = None,
        name: str = "ulmfit_tagger",
        **kwargs: Any,
    ) -> None:
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        x = keras.layers.Dropout(dropout, seed=seed, name="tagger_dropout")(backbone.output)
        outputs = keras.layers.Dense(num_labels, activation=activation, name="tag_predictions")(x)
        super().__init__(inputs=backbone.input, outputs=outputs, name=name, **kwargs)
        self.backbone = backbone
        self.num_labels = int(num_labels)
        self.dropout = float(dropout)
        self.activation = activation
        self.seed = seed

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "num_labels": self.num_labels,
            "dropout": self.dropout,
            "activation": self.activation,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> ULMFiTTagger:
        return cls(**deserialize_backbone(config, custom_objects))
