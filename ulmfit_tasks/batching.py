"""Length-bucketed batches for the task stages: fastai's ``SortedDL``, for Keras' ``model.fit``.

The task drivers post-pad every text to the longest of the dataset; a batch padded that far
pays for the dataset's longest text whatever its own rows are. :class:`BucketedBatches` instead
draws batches of similar length, each cut to its own longest row. Per epoch (seeded by the seed
and the epoch, so a run is reproducible): shuffle, cut into megabatches of 50 batches, sort each
megabatch longest first, cut into batches, shuffle the batch order keeping the longest batch
first (fastai: an out-of-memory error shows at once). An epoch has ``ceil(n / batch_size)``
batches and holds every example exactly once.

The Keras models mask on the pad id, so the cut padding changes neither the outputs at real
positions nor the loss. :meth:`BucketedBatches.dataset` is a ``tf.data`` pipeline whose
``element_spec`` has a dynamic sequence axis: Keras traces its train step once, not once per
batch width. :func:`predict_sorted` predicts the same way (length-sorted batches, each cut to
its own longest row) and returns the outputs in the input order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ulmfit_core.ids import PAD_ID

logger = logging.getLogger(__name__)

__all__ = [
    "MEGABATCH_BATCHES",
    "BucketedBatches",
    "bucket_batch_indices",
    "predict_sorted",
    "sequence_lengths",
]

MEGABATCH_BATCHES = 50  # fastai's SortedDL sorts within chunks of 50 batches


def sequence_lengths(ids: np.ndarray, pad_id: int = PAD_ID) -> np.ndarray:
    """Length of each post-padded row: its width less its trailing pad ids (a pad id inside a
    row counts as a token). ``(n,)`` int64; an all-padding row has length 0."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"expected post-padded ids of shape (n, width), got {ids.shape}")
    real = ids != pad_id
    trailing = np.argmax(real[:, ::-1], axis=1)
    return np.where(real.any(axis=1), ids.shape[1] - trailing, 0).astype(np.int64)


def bucket_batch_indices(
    lengths: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    megabatch: int = MEGABATCH_BATCHES,
) -> list[np.ndarray]:
    """fastai ``SortedDL``'s batches for one epoch: row indices, ``ceil(n / batch_size)`` batches.

    Shuffle (seeded by ``(seed, epoch)``), sort each chunk of ``megabatch * batch_size`` rows
    longest first (a stable sort: ties keep the shuffled order), cut into batches, shuffle the
    batches and put the one with the longest row first.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if megabatch < 1:
        raise ValueError(f"megabatch must be positive, got {megabatch}")
    lengths = np.asarray(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    chunk = megabatch * batch_size
    ordered = np.concatenate(
        [
            part[np.argsort(-lengths[part], kind="stable")]
            for part in (order[start : start + chunk] for start in range(0, len(order), chunk))
        ]
        or [order]
    )
    batches = [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]
    if not batches:
        return []
    rest = [batches[i] for i in rng.permutation(len(batches))]
    longest = int(np.argmax([lengths[b[0]] for b in rest]))
    return [rest[longest], *rest[:longest], *rest[longest + 1 :]]


def _per_token_leaves(targets: Any, shape: tuple[int, int]) -> Any:
    """Each target leaf as an array; a per-token leaf must have the ids' ``(n, width)`` shape."""

    def check(leaf):
        array = np.asarray(leaf)
        if array.shape[:2] != shape:
            raise ValueError(
                f"per-token targets must have the ids' shape {shape}, got {array.shape}"
            )
        return array

    return keras.tree.map_structure(check, targets)


class BucketedBatches:
    """Training batches of similar length, each cut to its own longest row.

    Args:
        ids: post-padded token ids ``(n, width)`` (padding after each row's ``</s>``).
        targets: an array (or a nest of arrays: a dict for a multi-output model) with ``n`` rows:
            class ids ``(n,)``, regression targets ``(n, 1)``, or per-token labels ``(n, width)``.
        batch_size: rows per batch (the last batch of an epoch may be smaller).
        seed: with the epoch, seeds each epoch's order.
        per_token_targets: the targets are per token (a tagger's): they are cut like the ids.
        pad_id: the id the model masks.
        megabatch: batches per sorted chunk.
    """

    def __init__(
        self,
        ids: np.ndarray,
        targets: Any,
        batch_size: int,
        seed: int = 0,
        per_token_targets: bool = False,
        pad_id: int = PAD_ID,
        megabatch: int = MEGABATCH_BATCHES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.ids = np.asarray(ids)
        self.lengths = sequence_lengths(self.ids, pad_id)
        if per_token_targets:
            self.targets = _per_token_leaves(targets, self.ids.shape)
        else:
            self.targets = keras.tree.map_structure(np.asarray, targets)
        for leaf in keras.tree.flatten(self.targets):
            if len(leaf) != len(self.ids):
                raise ValueError(f"{len(self.ids)} rows of ids but {len(leaf)} of targets")
        if not len(self.ids):
            raise ValueError("no examples to batch")
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.per_token_targets = per_token_targets
        self.megabatch = int(megabatch)

    def __len__(self) -> int:
        """Batches per epoch: ``ceil(n / batch_size)``."""
        return -(-len(self.ids) // self.batch_size)

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """The row indices of each batch of ``epoch``, in training order."""
        return bucket_batch_indices(
            self.lengths, self.batch_size, self.seed, epoch, megabatch=self.megabatch
        )

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        """``(ids, targets)`` of ``rows``, cut to their longest row (at least one column)."""
        width = max(1, int(self.lengths[rows].max()))

        def take(leaf: np.ndarray) -> np.ndarray:
            picked = leaf[rows]
            return picked[:, :width] if self.per_token_targets else picked

        return self.ids[rows, :width], keras.tree.map_structure(take, self.targets)

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, Any]]:
        """The ``(ids, targets)`` batches of ``epoch``."""
        for rows in self.batch_indices(epoch):
            yield self.batch(rows)

    def element_spec(self) -> tuple[tf.TensorSpec, Any]:
        """Batch and sequence axes dynamic: one trace of the train step for every width."""

        def spec(leaf: np.ndarray, sequence: bool) -> tf.TensorSpec:
            tail = (None, *leaf.shape[2:]) if sequence else leaf.shape[1:]
            return tf.TensorSpec((None, *tail), tf.as_dtype(leaf.dtype))

        return spec(self.ids, True), keras.tree.map_structure(
            lambda leaf: spec(leaf, self.per_token_targets), self.targets
        )

    def dataset(self, first_epoch: int = 0) -> tf.data.Dataset:
        """Epoch ``first_epoch``'s batches, then the next epoch's, without end.

        Give ``model.fit`` ``steps_per_epoch=len(self)``: Keras then keeps one iterator over the
        epochs (a fresh iterator starts again at ``first_epoch``).
        """

        def generate() -> Iterator[tuple[np.ndarray, Any]]:
            epoch = first_epoch
            while True:
                yield from self.epoch(epoch)
                epoch += 1

        return tf.data.Dataset.from_generator(
            generate, output_signature=self.element_spec()
        ).prefetch(2)

    def padded_fraction(self, epoch: int = 0) -> float:
        """Share of pad positions in ``epoch``'s batches (for the log; 1 - tokens / cells)."""
        cells = sum(
            len(rows) * max(1, int(self.lengths[rows].max())) for rows in self.batch_indices(epoch)
        )
        return 1.0 - float(self.lengths.sum()) / cells


def _restore(outputs: list[Any], widths: list[int], full_width: int, order: np.ndarray) -> Any:
    """Per-batch outputs in sorted order -> one nest of arrays in the input order.

    A leaf whose axis 1 is its batch's width in every batch is per token: padded back (zeros) to
    ``full_width``. (With a single batch width, that width is the full width: nothing to pad.)
    """

    def join(*leaves: np.ndarray) -> np.ndarray:
        per_token = all(
            leaf.ndim >= 2 and leaf.shape[1] == width
            for leaf, width in zip(leaves, widths, strict=True)
        )
        if per_token:
            leaves = tuple(
                np.pad(leaf, [(0, 0), (0, full_width - leaf.shape[1])] + [(0, 0)] * (leaf.ndim - 2))
                for leaf in leaves
            )
        joined = np.concatenate(leaves, axis=0)
        restored = np.empty_like(joined)
        restored[order] = joined
        return restored

    return keras.tree.map_structure(join, *outputs)


def predict_sorted(
    model: keras.Model, ids: np.ndarray, batch_size: int, pad_id: int = PAD_ID
) -> Any:
    """``model.predict(ids)``, run on length-sorted batches each cut to its own longest row.

    Returns the outputs in the order of ``ids``, with the structure and shapes ``predict`` gives:
    per-token outputs are padded back to ``ids``' width with zeros (positions past a row's length
    are padding either way). A model with a static sequence length predicts ``ids`` as they are.
    """
    ids = np.asarray(ids)
    if model.inputs[0].shape[1] is not None or not len(ids):
        return model.predict(ids, batch_size=batch_size, verbose=0)
    lengths = sequence_lengths(ids, pad_id)
    order = np.argsort(-lengths, kind="stable")
    outputs, widths = [], []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(1, int(lengths[rows].max()))
        predicted = model.predict_on_batch(ids[rows, :width])
        outputs.append(keras.tree.map_structure(np.asarray, predicted))
        widths.append(width)
    return _restore(outputs, widths, ids.shape[1], order)
