"""Word-level labels on SentencePiece subwords, for sequence tagging.

Two alignment schemes:

* ``"all"`` (the predecessor's): every subword of a word gets the word's label;
* ``"first"``: the first subword gets it, later subwords get ``ignore_label`` and count in neither
  the loss nor the metrics. Predictions are read back from each word's first subword
  (:func:`word_predictions`).

BOS/EOS and padding get ``ignore_label`` too; :class:`~ulmfit_keras.losses.
MaskedSparseCategoricalCrossentropy` and :class:`~ulmfit_keras.metrics.
MaskedSparseCategoricalAccuracy` skip those positions. Plain Python and numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ulmfit_core.ids import PAD_ID

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORE_LABEL",
    "SCHEMES",
    "AlignedSequence",
    "align_word_labels",
    "encode_words",
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
