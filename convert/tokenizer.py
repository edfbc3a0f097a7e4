"""The SentencePiece model of a conversion: checked against the LM, then copied as is.

The tokenizer is part of the model: ids mean nothing without it. The converter checks that its
vocabulary has as many pieces as the embedding has rows, that its special ids are fastai's
(``<unk>`` 0, ``<pad>`` 1, ``<s>`` 2, ``</s>`` 3, also as the processor's own
``unk_id``/``pad_id``/``bos_id``/``eos_id``) and, when the model's sidecar recorded one, that its
sha256 is the one the LM was trained with.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sentencepiece

from pretraining_utils.spm import vocab_text
from ulmfit_core.artifacts import sha256_file
from ulmfit_core.errors import InputError
from ulmfit_core.export_layout import SPM_DIR
from ulmfit_core.ids import SPECIAL_IDS

logger = logging.getLogger(__name__)

__all__ = ["SpmModel", "check_spm_model", "write_tokenizer"]


@dataclass(frozen=True)
class SpmModel:
    """A checked SentencePiece model: its path, bytes' sha256 and a loaded processor."""

    path: Path
    sha256: str
    processor: sentencepiece.SentencePieceProcessor

    @property
    def vocab_size(self) -> int:
        return int(self.processor.get_piece_size())

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids with ``<s>``/``</s>``, as stage 03 and the SavedModel's ``string_encoder``."""
        return self.processor.encode(list(texts), add_bos=True, add_eos=True)


def check_spm_model(
    path: str | os.PathLike,
    vocab_size: int,
    expected_sha256: str | None = None,
    lm_source: str = "the language model",
) -> SpmModel:
    """Load the ``.model`` at ``path`` and check it against the LM.

    Args:
        path: the SentencePiece ``.model``.
        vocab_size: rows of the LM's embedding.
        expected_sha256: the SPM sha256 recorded in the LM's sidecar, if any.
        lm_source: the LM file, for messages.

    Raises:
        InputError: unreadable model, vocabulary size or special ids that differ, another sha.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"SentencePiece model {path} not found")
    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as err:
        raise InputError(f"{path}: not a SentencePiece model ({err})") from None
    sha = sha256_file(path)
    pieces = int(processor.get_piece_size())
    if pieces != vocab_size:
        raise InputError(
            f"SPM vocab size {pieces} ({path}) differs from the embedding's {vocab_size} rows "
            f"({lm_source}): use the SentencePiece model the LM was trained with"
        )
    found = {processor.id_to_piece(i): i for i in range(min(len(SPECIAL_IDS), pieces))}
    own = {
        "<unk>": processor.unk_id(),
        "<pad>": processor.pad_id(),
        "<s>": processor.bos_id(),
        "</s>": processor.eos_id(),
    }
    if found != SPECIAL_IDS or own != SPECIAL_IDS:
        raise InputError(
            f"{path}: special ids {found} (processor ids {own}) are not fastai's {SPECIAL_IDS}; "
            "train the SPM model with 02_build_spm.py"
        )
    if expected_sha256 and expected_sha256 != sha:
        raise InputError(
            f"{path} has sha256 {sha}, but {lm_source} was trained with an SPM model of sha256 "
            f"{expected_sha256}; use that model"
        )
    return SpmModel(path, sha, processor)


def write_tokenizer(spm: SpmModel, out_dir: Path) -> Path:
    """Copy the ``.model`` and its ``.vocab`` into ``out_dir/spm_model/``.

    A missing ``.vocab`` is regenerated from the model (``piece<TAB>score`` lines, as
    ``spm_train`` writes them); the SPM ``.json`` sidecar is copied when present.
    """
    target = out_dir / SPM_DIR
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spm.path, target / spm.path.name)
    vocab = spm.path.with_suffix(".vocab")
    if vocab.is_file():
        shutil.copyfile(vocab, target / vocab.name)
    else:
        logger.warning("%s not found: writing it from the model", vocab)
        (target / vocab.name).write_text(vocab_text(spm.processor), encoding="utf-8")
    sidecar = spm.path.with_suffix(".json")
    if sidecar.is_file():
        shutil.copyfile(sidecar, target / sidecar.name)
    return target / spm.path.name
