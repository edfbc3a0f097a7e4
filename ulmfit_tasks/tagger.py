"""The sequence-tagger driver behind ``scripts/12_train_tagger.py``.

:func:`train_tagger` reads ``[[word, tag_id], ...]`` JSONL sentences, aligns the word tags to
SentencePiece subwords (``first``: later subwords ignored; ``all``: every subword labelled),
fine-tunes a :class:`~ulmfit_keras.ULMFiTTagger` with ULMFiT's tricks and reports entity-level
F1 on the validation sentences (predictions read at each word's first subword).
:class:`~ulmfit_tasks.predictors.TaggerPredictor` reloads the output directory and tags words.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import sentencepiece

from ulmfit_core.ids import BOS_ID, EOS_ID
from ulmfit_keras import (
    LRFinderResult,
    MaskedSparseCategoricalCrossentropy,
    ULMFiTTagger,
    entity_f1,
)
from ulmfit_keras.word_alignment import (
    AlignedSequence,
    align_word_labels,
    encode_words,
    pad_aligned,
    word_predictions,
)
from ulmfit_tasks.backbone import find_spm_model, load_backbone, resolve_export_dir
from ulmfit_tasks.batching import predict_sorted
from ulmfit_tasks.config import TaggerConfig
from ulmfit_tasks.data import read_tagger_jsonl, read_tagger_label_map, split_validation
from ulmfit_tasks.fine_tuning import TaskSetup, find_task_lr, fine_tune, write_task

logger = logging.getLogger(__name__)

__all__ = ["TaggerResult", "align_sentences", "encode_sentences", "find_tagger_lr", "train_tagger"]


@dataclass(frozen=True)
class TaggerResult:
    """History, validation entity F1 (best with --save-best), the output dir, the model."""

    history: dict[str, list[float]]
    val_f1: float
    out_path: Path
    truncated: int
    model: keras.Model | None = None


def align_sentences(
    spm: sentencepiece.SentencePieceProcessor,
    sentences: Sequence[tuple[Sequence[str], Sequence[int]]],
    scheme: str,
    max_seq_len: int,
) -> tuple[list[AlignedSequence], int]:
    """Sentences aligned to ``<s> subwords </s>``, cut to ``max_seq_len``; and how many were cut."""
    aligned, truncated = [], 0
    for words, tags in sentences:
        pieces = encode_words(spm.encode, list(words))
        full = sum(len(p) for p in pieces) + 2
        truncated += full > max_seq_len
        aligned.append(
            align_word_labels(
                pieces, tags, scheme, bos_id=BOS_ID, eos_id=EOS_ID, max_len=max_seq_len
            )
        )
    if truncated:
        logger.warning(
            "%d of %d sentences truncated to %d tokens (words cut off get tag 0)",
            truncated,
            len(aligned),
            max_seq_len,
        )
    return aligned, truncated


def encode_sentences(
    spm: sentencepiece.SentencePieceProcessor,
    sentences: Sequence[Sequence[str]],
    max_seq_len: int,
    fixed_seq_len: int | None = None,
) -> tuple[np.ndarray, list[AlignedSequence]]:
    """The model's input for untagged sentences, and the alignment to read its predictions by
    (``word_starts``): ``(ids (n, length) int32, aligned)``, post-padded to ``fixed_seq_len``
    or the longest."""
    # The scheme only decides which subwords carry a label: ids and word_starts are the same.
    untagged = [(words, [0] * len(words)) for words in sentences]
    aligned, _ = align_sentences(spm, untagged, "first", max_seq_len)
    ids, _ = pad_aligned(aligned, fixed_seq_len)
    return ids, aligned


class _ValidationF1(keras.callbacks.Callback):
    """Put the validation entity-level F1 (``val_f1``) into the epoch logs and log it."""

    def __init__(
        self,
        ids: np.ndarray,
        aligned: Sequence[AlignedSequence],
        gold: list[list[str]],
        tag_names: list[str],
        batch_size: int,
    ) -> None:
        super().__init__()
        self.ids, self.aligned, self.gold = ids, aligned, gold
        self.tag_names, self.batch_size = tag_names, batch_size

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        token_preds = predict_sorted(self.model, self.ids, self.batch_size).argmax(-1)
        predicted = [
            [self.tag_names[t] for t in word_predictions(row, seq.word_starts)]
            for row, seq in zip(token_preds, self.aligned, strict=True)
        ]
        scores = entity_f1(self.gold, predicted)
        if logs is not None:
            logs["val_f1"] = scores["f1"]
        loss = (logs or {}).get("loss", float("nan"))
        logger.info(
            "epoch %d: loss %.4f, validation entity P %.4f R %.4f F1 %.4f",
            epoch + 1,
            loss,
            scores["precision"],
            scores["recall"],
            scores["f1"],
        )


def _tagger_setup(config: TaggerConfig) -> tuple[TaskSetup, list[str]]:
    """The tagger ready to train, and its tag names."""
    tag_names = read_tagger_label_map(config.label_map)
    train = read_tagger_jsonl(config.train_jsonl, len(tag_names))
    if config.test_jsonl is not None:
        valid = read_tagger_jsonl(config.test_jsonl, len(tag_names))
    else:
        # No test file: a fixed-seed validation split of the training file.
        train_idx, valid_idx = split_validation(len(train))
        train, valid = [train[i] for i in train_idx], [train[i] for i in valid_idx]
        logger.info("no --test-jsonl: validating on %d sentences", len(valid))
    export_dir = resolve_export_dir(config.model_weights_cp)
    spm_path = find_spm_model(export_dir, config.spm_model_file)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    train_aligned, train_cut = align_sentences(spm, train, config.align, config.max_seq_len)
    valid_aligned, valid_cut = align_sentences(spm, valid, config.align, config.max_seq_len)
    train_ids, train_labels = pad_aligned(train_aligned, config.fixed_seq_len)
    valid_ids, _ = pad_aligned(valid_aligned, config.fixed_seq_len)

    backbone = load_backbone(config, export_dir)
    gold = [[tag_names[t] for t in tags] for _, tags in valid]
    setup = TaskSetup(
        export_dir=export_dir,
        spm_path=spm_path,
        backbone=backbone,
        model=ULMFiTTagger(backbone=backbone, num_labels=len(tag_names), seed=config.seed),
        train_ids=train_ids,
        train_targets=train_labels,
        loss=MaskedSparseCategoricalCrossentropy(),
        validation=_ValidationF1(valid_ids, valid_aligned, gold, tag_names, config.batch_size),
        monitor="val_f1",
        mode="max",
        truncated=train_cut + valid_cut,
        per_token_targets=True,
    )
    return setup, tag_names


def find_tagger_lr(config: TaggerConfig, steps: int) -> tuple[LRFinderResult, Path]:
    """Run ``steps`` of the LR finder on the tagger; save ``OUT/lr_finder.png``."""
    setup, _ = _tagger_setup(config)
    return find_task_lr(config, setup, steps)


def train_tagger(config: TaggerConfig) -> TaggerResult:
    """Fine-tune a tagger on ``config.train_jsonl``; write the model to ``config.out_path``."""
    setup, tag_names = _tagger_setup(config)
    history = fine_tune(config, setup)
    write_task(config, setup, {"task": "tagger", "tags": tag_names, "align": config.align})
    scores = history["val_f1"]
    return TaggerResult(
        history,
        max(scores) if config.save_best else scores[-1],
        config.out_path,
        setup.truncated,
        model=setup.model,
    )
