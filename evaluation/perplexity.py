"""Perplexity of a converted LM on a held-out corpus, in PyTorch and in TensorFlow, side by side.

Both sides see the same batches: fastai's LM stream batching over the corpus
(:class:`pretraining_utils.lm_data.LMStreamBatches`, file order: the lines are concatenated, cut
into ``bs`` parallel streams, and batch ``j`` is the ``j``-th window of ``bptt`` tokens of every
stream, targets shifted by one).

**Each window is evaluated from a zero state** (fastai's ``reset()`` before every batch) on both
sides, because the Keras model is stateless per call: its state starts at zero for every call.
fastai's own validation carries the hidden state from one window to the next, so these
perplexities are somewhat higher than fastai's ``valid_loss`` would give; they are computed the
same way on both sides, which is what the comparison needs. The PyTorch side is the reference
forward of :mod:`convert.reference` on the ``.pth`` copied into the export, read through the one
state-dict reader (:func:`ulmfit_torch.state_dict.read_lm_state`, ``config.json`` as its
sidecar); the TF side is the
Keras LM rebuilt from ``keras_weights/`` or the SavedModel's ``lm_logits`` signature (whose
fixed length, if any, is filled with post-padding: padded positions are masked and not scored).

Perplexity is ``exp(sum of token NLL / tokens)``, the NLLs summed in float64.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convert.reference import build_reference
from convert.verify import ParityError, pad_batch
from pretraining_utils.lm_data import LMStreamBatches, open_token_corpus
from ulmfit_core.errors import InputError
from ulmfit_core.export_layout import CONFIG_FILE, FASTAI_DIR, SAVED_MODEL_DIR
from ulmfit_core.lm_config import LMConfig
from ulmfit_torch.checkpoint_io import load_pth
from ulmfit_torch.state_dict import read_lm_state

logger = logging.getLogger(__name__)

__all__ = ["TF_MODELS", "EvalConfig", "EvalSummary", "evaluate_lm"]

TF_MODELS = ("keras", "saved_model")


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation.

    Args:
        export_dir: the converter's output directory.
        corpus_path: a stage-03 binary corpus directory, or a text id file.
        tf_model: ``"keras"`` (``keras_weights/``) or ``"saved_model"`` (``lm_logits``).
        batch_size: parallel streams.
        bptt: window length.
        max_batches: evaluate only the first batches (``None``: all).
        tolerance: largest relative perplexity difference allowed (0.001 = 0.1%).
    """

    export_dir: Path
    corpus_path: Path
    tf_model: str = "keras"
    batch_size: int = 16
    bptt: int = 70
    max_batches: int | None = None
    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if self.tf_model not in TF_MODELS:
            raise InputError(f"unknown TF model {self.tf_model!r}: use one of {TF_MODELS}")
        if self.batch_size < 1 or self.bptt < 1:
            raise InputError("batch size and bptt must be positive")


@dataclass(frozen=True)
class EvalSummary:
    """Both perplexities and how far apart they are."""

    torch_perplexity: float
    tf_perplexity: float
    relative_diff: float
    tokens: int
    batches: int
    tf_model: str
    seconds: dict[str, float]


def _read_export(export_dir: Path) -> tuple[LMConfig, Path]:
    config_path = export_dir / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"{export_dir} is not a conversion output (no config.json)")
    config = LMConfig.load(config_path)
    found = sorted((export_dir / FASTAI_DIR).glob("*.pth"))
    if len(found) != 1:
        raise InputError(f"expected one .pth in {export_dir / 'fastai_model'}, found {found}")
    return config, found[0]


def _torch_scorer(pth: Path, config: LMConfig) -> Callable[[np.ndarray, np.ndarray], float]:
    state = read_lm_state(load_pth(pth), str(pth), config, sidecar_name=CONFIG_FILE)
    reference = build_reference(state)

    def score(x: np.ndarray, y: np.ndarray) -> float:
        logits = reference(torch.from_numpy(x.astype(np.int64)))["logits"]
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            torch.from_numpy(y.astype(np.int64)).reshape(-1),
            reduction="none",
        )
        return float(nll.double().sum())

    return score


def _tf_scorer(cfg: EvalConfig) -> Callable[[np.ndarray, np.ndarray], float]:
    import tensorflow as tf

    if cfg.tf_model == "keras":
        from ulmfit_keras import load_language_model

        _, lm = load_language_model(cfg.export_dir)

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
        def logits_of(ids):
            return lm(ids, training=False)

        fixed = None
    else:
        import tensorflow_text  # noqa: F401 - registers the SentencePiece op

        loaded = tf.saved_model.load(str(cfg.export_dir / SAVED_MODEL_DIR))
        spec = loaded.signatures["lm_logits"].structured_input_signature[1]["token_ids"]
        fixed = spec.shape[1]
        if fixed is not None and cfg.bptt > fixed:
            raise InputError(
                f"--bptt {cfg.bptt} is longer than the SavedModel's fixed length {fixed}"
            )

        def logits_of(ids):
            return loaded.lm_logits(ids)["output"]

    def score(x: np.ndarray, y: np.ndarray) -> float:
        width = x.shape[1]
        ids = pad_batch(list(x.astype(np.int32)), fixed)  # post-pad with 1 to a fixed length
        logits = logits_of(tf.constant(ids))[:, :width]
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(y.astype(np.int32)), logits=logits
        )
        return float(tf.reduce_sum(tf.cast(nll, tf.float64)))

    return score


def evaluate_lm(cfg: EvalConfig) -> EvalSummary:
    """Perplexity in PyTorch and in TF over the same batches (see the module docstring).

    Raises:
        InputError: a bad export dir or corpus; :class:`ParityError` when the two perplexities
            differ by more than ``cfg.tolerance`` (relative).
    """
    seconds: dict[str, float] = {}
    config, pth = _read_export(cfg.export_dir)
    with tempfile.TemporaryDirectory(prefix="eval-ids-") as scratch:
        corpus = open_token_corpus(cfg.corpus_path, config.vocab_size, os.path.join(scratch, "c"))
        if corpus.vocab_size != config.vocab_size:
            raise InputError(
                f"{cfg.corpus_path} was encoded with a vocabulary of {corpus.vocab_size}, "
                f"the LM has {config.vocab_size}"
            )
        batches = LMStreamBatches(corpus.tokens, corpus.offsets, cfg.batch_size, cfg.bptt)
        n_batches = len(batches) if cfg.max_batches is None else min(len(batches), cfg.max_batches)
        torch_score = _torch_scorer(pth, config)
        tf_score = _tf_scorer(cfg)
        totals = {"torch": 0.0, "tf": 0.0}
        tokens = 0
        for j in range(n_batches):
            x, y = batches.batch(j)
            start = time.perf_counter()
            totals["torch"] += torch_score(x, y)
            middle = time.perf_counter()
            totals["tf"] += tf_score(x, y)
            seconds["torch"] = seconds.get("torch", 0.0) + middle - start
            seconds["tf"] = seconds.get("tf", 0.0) + time.perf_counter() - middle
            tokens += y.size
    if tokens == 0:
        raise InputError(f"{cfg.corpus_path}: no tokens to evaluate")
    torch_ppl = math.exp(totals["torch"] / tokens)
    tf_ppl = math.exp(totals["tf"] / tokens)
    relative = abs(tf_ppl - torch_ppl) / torch_ppl
    summary = EvalSummary(torch_ppl, tf_ppl, relative, tokens, n_batches, cfg.tf_model, seconds)
    logger.info(
        "perplexity over %d tokens (%d batches of %dx%d, zero state per window): "
        "PyTorch %.4f, TF (%s) %.4f, relative difference %.2e",
        tokens,
        n_batches,
        cfg.batch_size,
        cfg.bptt,
        torch_ppl,
        cfg.tf_model,
        tf_ppl,
        relative,
    )
    if not relative <= cfg.tolerance:
        raise ParityError(
            f"perplexities disagree: PyTorch {torch_ppl:.6g}, TF ({cfg.tf_model}) {tf_ppl:.6g}, "
            f"relative difference {relative:.3g} > {cfg.tolerance:g}"
        )
    return summary
