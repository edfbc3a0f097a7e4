"""The tagger's part of the inference graph: words, their subword ids, one tag per word.

As :class:`~ulmfit_tasks.predictors.TaggerPredictor` does, each word is encoded by SentencePiece
on its own and the pieces are concatenated as ``<s> pieces </s>``, cut to the sequence length; a
word's tag is the tag of its first subword, and a word with no subword (SentencePiece encodes it
to nothing, or the cut dropped it) gets tag 0.

Words are split at :data:`WORD_SEPARATORS`, ASCII whitespace as ``str.split()`` takes it, by
tensorflow_text's whitespace tokenizer (it has a TFLite kernel) with that set as its config:
its default Unicode set cannot be used, because it leaves the leading bytes of a multi-byte
space (U+00A0, U+3000, ...) at the end of the word before it. Such a space stays inside a word
here (SentencePiece then sees it as a space within the word). :func:`split_words` is the same
split in Python. Everything after the two tokenizers is gathers and selects: TFLite builtins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tensorflow as tf
import tensorflow_text as tf_text

from ulmfit_core.ids import BOS_ID, EOS_ID, PAD_ID

__all__ = ["WORD_SEPARATORS", "WordPieces", "WordTokenizer", "split_words"]

WORD_SEPARATORS = "\t\n\v\f\r\x1c\x1d\x1e\x1f "
_SEPARATOR_RE = re.compile(f"[{re.escape(WORD_SEPARATORS)}]+")
# The config is a bit per code point, up to its length * 8. The kernel reads one byte past the
# end for the code point length * 8 (a "<=" there), so that code point is made a noncharacter.
_CONFIG_BYTES = 0xFDD0 // 8


def split_words(text: str) -> list[str]:
    """The words of ``text`` as the exported graph splits them."""
    return [word for word in _SEPARATOR_RE.split(text) if word]


def _separator_config() -> bytes:
    config = bytearray(_CONFIG_BYTES)
    for char in WORD_SEPARATORS:
        config[ord(char) >> 3] |= 1 << (ord(char) & 7)
    return bytes(config)


@dataclass(frozen=True)
class WordPieces:
    """One batch of texts as words and subwords (all int32).

    Attributes:
        lengths: ``(batch,)`` ids per text, ``<s>`` and ``</s>`` included, before any cut.
        pieces: the subword ids of all words, flat, one dummy id appended (so that a gather
            stays in range when there are none).
        text_starts: ``(batch,)`` where each text's pieces start in ``pieces``.
        word_splits: ``(batch + 1,)`` row splits of the words over the texts.
        word_piece_starts, word_piece_counts: per word (one dummy appended), where its pieces
            start in ``pieces`` and how many it has.
    """

    lengths: tf.Tensor
    pieces: tf.Tensor
    text_starts: tf.Tensor
    word_splits: tf.Tensor
    word_piece_starts: tf.Tensor
    word_piece_counts: tf.Tensor

    def pad(self, length) -> tuple[tf.Tensor, tf.Tensor]:
        """``(ids (batch, length) int32 padded with PAD_ID, valid (batch, length) bool)``."""
        counts = (self.lengths - 2)[:, tf.newaxis]
        positions = tf.range(length, dtype=tf.int32)[tf.newaxis, :]
        last = tf.shape(self.pieces)[0] - 1
        index = tf.clip_by_value(self.text_starts[:, tf.newaxis] + positions - 1, 0, last)
        inner = tf.where(positions <= counts, tf.gather(self.pieces, index), PAD_ID)
        ids = tf.where(positions == counts + 1, EOS_ID, inner)
        ids = tf.where(positions == 0, BOS_ID, ids)
        return ids, positions < counts + 2

    def word_tags(self, token_tags: tf.Tensor, length, tag_names) -> tf.Tensor:
        """``(batch, W)`` tag names, ``""``-padded (``W``: the batch's most words, at least 1),
        from ``token_tags`` ``(batch, length)`` int32 tag ids."""
        counts = self.word_splits[1:] - self.word_splits[:-1]
        width = tf.maximum(tf.reduce_max(counts), 1)
        slots = tf.range(width, dtype=tf.int32)[tf.newaxis, :]
        real = slots < counts[:, tf.newaxis]
        dummy = tf.shape(self.word_piece_counts)[0] - 1
        word = tf.where(real, self.word_splits[:-1, tf.newaxis] + slots, dummy)
        position = 1 + tf.gather(self.word_piece_starts, word) - self.text_starts[:, tf.newaxis]
        length = tf.cast(length, tf.int32)
        found = real & (tf.gather(self.word_piece_counts, word) > 0) & (position < length)
        rows = tf.range(tf.shape(token_tags)[0], dtype=tf.int32)[:, tf.newaxis]
        flat = tf.where(found, rows * length + position, 0)
        tag = tf.where(found, tf.gather(tf.reshape(token_tags, [-1]), flat), 0)
        return tf.gather(tf.constant([*tag_names, ""]), tf.where(real, tag, len(tag_names)))


class WordTokenizer:
    """Texts -> :class:`WordPieces`, in the graph (see the module docstring)."""

    def __init__(self, spm_bytes: bytes) -> None:
        self._splitter = tf_text.WhitespaceTokenizer()
        self._splitter._config = _separator_config()  # its only state: which code points split
        self._pieces = tf_text.FastSentencepieceTokenizer(spm_bytes)  # no <s> </s>: per word

    def __call__(self, text: tf.Tensor) -> WordPieces:
        words = self._splitter.tokenize(text)
        word_splits = tf.cast(words.row_splits, tf.int32)
        pieces = self._pieces.tokenize(words.flat_values)
        piece_splits = tf.cast(pieces.row_splits, tf.int32)
        text_splits = tf.gather(piece_splits, word_splits)
        zero = tf.zeros([1], tf.int32)
        return WordPieces(
            lengths=text_splits[1:] - text_splits[:-1] + 2,
            pieces=tf.concat([tf.cast(pieces.flat_values, tf.int32), zero + PAD_ID], 0),
            text_starts=text_splits[:-1],
            word_splits=word_splits,
            word_piece_starts=tf.concat([piece_splits[:-1], zero], 0),
            word_piece_counts=tf.concat([piece_splits[1:] - piece_splits[:-1], zero], 0),
        )
