"""Stage 04's data: the corpora it trains and validates on, and fastai loaders over them.

:func:`open_corpora` opens (or converts) the training and validation corpora and checks that they
agree with each other and with the run's settings; :func:`make_loaders` cuts them into
:class:`~pretraining_utils.lm_data.LMStreamBatches` for this process and wraps those in
:class:`LMStreamDataLoader`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader

from lm_training.config import TrainConfig
from pretraining_utils.corpus import BinaryCorpus
from pretraining_utils.lm_data import HoldOut, LMStreamBatches, open_token_corpus
from ulmfit_core.errors import InputError
from ulmfit_core.ids import SPECIAL_IDS

__all__ = ["Corpora", "LMStreamDataLoader", "make_loaders", "open_corpora"]

logger = logging.getLogger(__name__)


class LMStreamDataLoader(DataLoader):
    """A fastai ``DataLoader`` over :class:`LMStreamBatches`, for ``Learner``.

    Each batch is gathered from the memory map when it is needed (no worker processes: a batch
    costs about a millisecond). ``len()`` is the number of batches, ``n`` is
    ``n_batches * bs`` as in fastai's ``LMDataLoader``. The line order is fixed with
    :meth:`set_epoch`; stage 04 calls it before each training epoch so that
    the order depends only on ``(seed, epoch)``, whatever else iterated the loader.
    """

    def __init__(self, batches: LMStreamBatches, device: torch.device | str | None = None):
        self.batches = batches
        super().__init__(
            dataset=batches,
            bs=batches.bs,
            shuffle=False,
            indexed=False,
            n=len(batches) * batches.bs,
            device=device,
            pin_memory=torch.device(device or "cpu").type == "cuda",
        )
        self.n_inp = 1

    def get_idxs(self) -> range:
        return range(self.n)  # unused by create_batches; a range costs no memory

    def create_batches(self, samps):  # noqa: ARG002 - fastai's signature; batches are computed
        for j in range(len(self.batches)):
            x, y = self.batches.batch(j)
            yield torch.from_numpy(x), torch.from_numpy(y)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def new(self, *args, **kwargs):
        raise NotImplementedError(
            "LMStreamDataLoader cannot be copied with new(); build another from LMStreamBatches"
        )


@dataclass
class Corpora:
    train: BinaryCorpus
    valid: BinaryCorpus | None
    vocab_size: int
    spm_model_sha256: str | None


def open_corpora(cfg: TrainConfig, convert_dir: Path) -> Corpora:
    train = open_token_corpus(cfg.train_path, cfg.vocab_size, convert_dir / "train")
    valid = None
    if cfg.valid_path is not None:
        valid = open_token_corpus(cfg.valid_path, cfg.vocab_size, convert_dir / "valid")
    for name, corpus in (("training", train), ("validation", valid)):
        if corpus is None:
            continue
        if cfg.vocab_size is not None and corpus.vocab_size != cfg.vocab_size:
            raise InputError(
                f"--vocab-size {cfg.vocab_size} does not match the {name} corpus's vocabulary "
                f"of {corpus.vocab_size} ({corpus.path / 'meta.json'}); drop the flag or fix it"
            )
        special = corpus.meta.get("special_ids")
        if special is not None and special != SPECIAL_IDS:
            raise InputError(
                f"the {name} corpus uses special ids {special}, but the models need fastai's "
                f"{SPECIAL_IDS}; rebuild the SentencePiece model with stage 02"
            )
    sha = train.meta.get("spm_model_sha256")
    if valid is not None:
        if valid.vocab_size != train.vocab_size:
            raise InputError(
                f"the training corpus has a vocabulary of {train.vocab_size} pieces but the "
                f"validation corpus has {valid.vocab_size}; encode both with the same SPM model"
            )
        valid_sha = valid.meta.get("spm_model_sha256")
        if sha and valid_sha and sha != valid_sha:
            raise InputError(
                f"the training corpus was encoded with SPM model sha256 {sha} but the validation "
                f"corpus with {valid_sha}; encode both with the same model"
            )
        sha = sha or valid_sha
        if train.meta.get("reverse", False) != valid.meta.get("reverse", False):
            raise InputError(
                "one corpus was encoded reversed (--spm-extra-options reverse) and the other not; "
                "a backward language model needs both reversed"
            )
    return Corpora(train, valid, train.vocab_size, sha)


def make_loaders(
    cfg: TrainConfig, corpora: Corpora, rank: int, world_size: int, device: torch.device
) -> DataLoaders:
    common = dict(
        bs=cfg.batch_size, bptt=cfg.bptt, min_len=cfg.min_seq_len, rank=rank, world_size=world_size
    )
    train_c, valid_c = corpora.train, corpora.valid
    split = None if valid_c is not None else HoldOut(cfg.valid_fraction, held_out=False)
    try:
        train = LMStreamBatches(
            train_c.tokens, train_c.offsets, shuffle=True, seed=cfg.seed, holdout=split, **common
        )
    except InputError as err:
        raise InputError(f"training data: {err}") from None
    source = valid_c if valid_c is not None else train_c
    holdout = None if valid_c is not None else HoldOut(cfg.valid_fraction, held_out=True)
    try:
        valid = LMStreamBatches(
            source.tokens, source.offsets, shuffle=False, holdout=holdout, **common
        )
    except InputError as err:
        hint = (
            "" if valid_c is not None else " (raise --valid-fraction or pass --pretokenized-valid)"
        )
        raise InputError(f"validation data: {err}{hint}") from None
    if rank == 0:
        for name, b in (("train", train), ("valid", valid)):
            dropped = (
                f" ({b.dropped_lines} shorter than {cfg.min_seq_len} tokens dropped)"
                if cfg.min_seq_len > 0
                else ""
            )
            logger.info(
                "%s: %d lines%s, %d tokens -> %d batches of %d x %d per process%s",
                name,
                b.num_lines,
                dropped,
                b.num_tokens,
                len(b),
                b.bs,
                b.bptt,
                f" ({world_size} processes)" if world_size > 1 else "",
            )
    return DataLoaders(
        LMStreamDataLoader(train, device), LMStreamDataLoader(valid, device), device=device
    )
