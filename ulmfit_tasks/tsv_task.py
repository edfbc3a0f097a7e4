"""What the TSV text tasks (classifier, regressor) share: examples with a validation split, and
their ids under the export's SentencePiece model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece

from ulmfit_tasks.backbone import find_spm_model, resolve_export_dir
from ulmfit_tasks.config import FineTuneConfig
from ulmfit_tasks.data import TextExamples, encode_texts, read_tsv, split_validation

logger = logging.getLogger(__name__)

__all__ = ["PreparedTexts", "load_examples", "prepare_texts"]


def load_examples(
    config: FineTuneConfig, targets: Callable[[TextExamples, str], np.ndarray]
) -> tuple[TextExamples, np.ndarray, TextExamples, np.ndarray]:
    """``(train, train_targets, valid, valid_targets)``; ``targets`` checks and converts golds."""
    train = read_tsv(config.train_tsv, config.data_column, config.gold_column)
    train_y = targets(train, str(config.train_tsv))
    if config.test_tsv is not None:
        valid = read_tsv(config.test_tsv, config.data_column, config.gold_column)
        return train, train_y, valid, targets(valid, str(config.test_tsv))
    # No test file: a fixed-seed validation split of the training file.
    train_idx, valid_idx = split_validation(len(train))
    logger.info(
        "no --test-tsv: validating on %d of %d training examples", len(valid_idx), len(train)
    )

    def subset(idx: np.ndarray) -> TextExamples:
        return TextExamples(tuple(train.texts[i] for i in idx), tuple(train.golds[i] for i in idx))

    return subset(train_idx), train_y[train_idx], subset(valid_idx), train_y[valid_idx]


@dataclass(frozen=True)
class PreparedTexts:
    export_dir: Path
    spm_path: Path
    train_ids: np.ndarray
    valid_ids: np.ndarray
    truncated: int


def prepare_texts(
    config: FineTuneConfig, train: TextExamples, valid: TextExamples
) -> PreparedTexts:
    """Find the export and its SentencePiece model; numericalize both splits."""
    export_dir = resolve_export_dir(config.model_weights_cp)
    spm_path = find_spm_model(export_dir, config.spm_model_file)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    train_x = encode_texts(spm.encode, train.texts, config.max_seq_len, config.fixed_seq_len)
    valid_x = encode_texts(spm.encode, valid.texts, config.max_seq_len, config.fixed_seq_len)
    return PreparedTexts(
        export_dir, spm_path, train_x.ids, valid_x.ids, train_x.truncated + valid_x.truncated
    )
