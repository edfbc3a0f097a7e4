"""Stage 08's data: labelled TSV examples as SentencePiece ids, and fastai's sorted loaders.

Each text becomes ``[<s>, *pieces, </s>]`` (no truncation: the classifier reads any length in
chunks of ``bptt``); its gold label becomes a class index of the label map. The TSV reading and
the label messages are :mod:`ulmfit_core.labelled_data`'s, shared with the Keras stages.

The loaders are fastai's ``SortedDL``, as its ``TextBlock`` makes them for classification:
training batches from length-sorted chunks in a shuffled order (so that a batch holds texts of
similar lengths), validation sorted by length. Batches are padded first in whole chunks by
:func:`pad_chunks`, fastai's ``pad_chunk`` with the one change described there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import sentencepiece
import torch
from fastai.data.core import DataLoaders
from fastai.text.data import SortedDL, pad_chunk

from lm_training.classifier_config import ClassifierTrainConfig
from ulmfit_core.classifier_config import DEFAULT_BPTT
from ulmfit_core.errors import InputError
from ulmfit_core.ids import BOS_ID, EOS_ID, PAD_ID
from ulmfit_core.labelled_data import (
    VALIDATION_SEED,
    TextExamples,
    label_indices,
    read_label_map,
    read_tsv,
    split_validation,
)

__all__ = [
    "ClassifierData",
    "EncodedExamples",
    "encode_examples",
    "make_classifier_loaders",
    "pad_chunks",
    "read_classifier_data",
]

logger = logging.getLogger(__name__)

# Stage 10's (ulmfit_tasks.data): both stages hold out the same examples of a training file.


@dataclass(frozen=True)
class EncodedExamples:
    """Texts as id arrays ``[<s>, *pieces, </s>]`` (int64) and their class indices."""

    ids: tuple[np.ndarray, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]

    def items(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(ids, label)`` tensor pairs: the dataset of a loader."""
        return [
            (torch.from_numpy(ids), torch.tensor(int(label)))
            for ids, label in zip(self.ids, self.labels, strict=True)
        ]

    def subset(self, indices: np.ndarray) -> EncodedExamples:
        return EncodedExamples(tuple(self.ids[i] for i in indices), self.labels[indices])


@dataclass(frozen=True)
class ClassifierData:
    """The training and validation examples, the label names, and where validation came from."""

    train: EncodedExamples
    valid: EncodedExamples
    labels: list[str]
    valid_source: str


def encode_examples(
    processor: sentencepiece.SentencePieceProcessor,
    examples: TextExamples,
    labels: Sequence[str],
    source: str,
) -> EncodedExamples:
    """SentencePiece ids with ``<s>``/``</s>`` around them, and the labels' class indices.

    Raises:
        InputError: labels missing from the label map (all named).
    """
    classes = label_indices(examples, labels, source).astype(np.int64)
    pieces = processor.encode(list(examples.texts))
    ids = tuple(np.asarray([BOS_ID, *p, EOS_ID], dtype=np.int64) for p in pieces)
    return EncodedExamples(ids, classes)


def read_classifier_data(
    cfg: ClassifierTrainConfig, processor: sentencepiece.SentencePieceProcessor
) -> ClassifierData:
    """Read, check and encode the run's examples.

    Raises:
        InputError: a missing column (the columns found are listed), an unknown label, an
            empty file, too few examples for the batch size.
    """
    labels = read_label_map(cfg.label_map)
    if len(labels) < 2:
        raise InputError(f"{cfg.label_map}: a classifier needs at least 2 labels, got {labels}")
    train_examples = read_tsv(cfg.train_tsv, cfg.data_column, cfg.gold_column)
    train = encode_examples(processor, train_examples, labels, str(cfg.train_tsv))
    if cfg.test_tsv is not None:
        test_examples = read_tsv(cfg.test_tsv, cfg.data_column, cfg.gold_column)
        valid = encode_examples(processor, test_examples, labels, str(cfg.test_tsv))
        source = str(cfg.test_tsv)
    else:
        train_idx, valid_idx = split_validation(len(train), cfg.valid_fraction)
        train, valid = train.subset(train_idx), train.subset(valid_idx)
        source = f"{cfg.valid_fraction:.0%} of {cfg.train_tsv} (seed {VALIDATION_SEED})"
    if len(train) < cfg.batch_size:
        raise InputError(
            f"{len(train)} training examples are fewer than one batch of {cfg.batch_size} "
            "(training drops the last incomplete batch, as fastai does); lower --batch-size"
        )
    data = ClassifierData(train, valid, labels, source)
    _log_data(data)
    return data


def _log_data(data: ClassifierData) -> None:
    for name, part in (("train", data.train), ("valid", data.valid)):
        lengths = part.lengths
        counts = np.bincount(part.labels, minlength=len(data.labels))
        logger.info(
            "%s: %d examples, %d tokens (longest %d), per label %s%s",
            name,
            len(part),
            sum(lengths),
            max(lengths),
            ", ".join(f"{label} {n}" for label, n in zip(data.labels, counts, strict=True)),
            f"; from {data.valid_source}" if name == "valid" else "",
        )


def pad_chunks(
    samples: Sequence[tuple[Any, ...]], pad_idx: int = PAD_ID, seq_len: int = DEFAULT_BPTT
) -> list[tuple[Any, ...]]:
    """fastai's ``pad_input_chunk(pad_first=True)``, padded to whole chunks of ``seq_len``.

    Like fastai, each text gets its padding in whole chunks in front and the rest behind, so
    that it starts on a chunk boundary, as ``SentenceEncoder`` expects. Unlike fastai, a batch
    longer than ``seq_len`` is padded to a multiple of ``seq_len`` (at most ``seq_len - 1`` more
    columns). With fastai's length (the longest text's), the texts of a length-sorted batch need
    not start in order of length, and ``SentenceEncoder`` (which feeds the first ``real_bs``
    rows of each chunk) then leaves some texts' last tokens out, and pools a padding position
    as their "last" output. Here every text's outputs are those of the text alone.
    """
    longest = max(len(sample[0]) for sample in samples)
    pad_len = longest if longest <= seq_len else -(-longest // seq_len) * seq_len
    return [
        (
            pad_chunk(sample[0], pad_idx=pad_idx, pad_first=True, seq_len=seq_len, pad_len=pad_len),
            *sample[1:],
        )
        for sample in samples
    ]


def make_classifier_loaders(
    data: ClassifierData, *, batch_size: int, bptt: int, device: torch.device
) -> DataLoaders:
    """fastai ``SortedDL`` loaders on ``device``: training shuffled in length-sorted chunks (the
    last incomplete batch dropped, as fastai does), validation sorted by length.

    The training order comes from numpy's global RNG (fastai's ``SortedDL``), which the run
    seeds and its checkpoints restore.
    """
    collate = partial(pad_chunks, pad_idx=PAD_ID, seq_len=bptt)
    train = SortedDL(
        data.train.items(),
        res=data.train.lengths,
        bs=batch_size,
        shuffle=True,
        drop_last=True,
        before_batch=collate,
        device=device,
    )
    valid = SortedDL(
        data.valid.items(),
        res=data.valid.lengths,
        bs=batch_size,
        shuffle=False,
        drop_last=False,
        before_batch=collate,
        device=device,
    )
    return DataLoaders(train, valid, device=device)
