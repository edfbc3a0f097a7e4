"""Stage 05 for a fastai text classifier (stage 08's ``EXP.pth``): a task directory, with parity.

:func:`convert_classifier` reads the classifier (:func:`ulmfit_torch.classifier_state.
read_classifier_state`: the encoder through the LM reader, the head against the sidecar's
``"classifier"`` object), builds the Keras encoder and a :class:`~ulmfit_keras.ULMFiTClassifier`
with fastai's head settings (BatchNorm ``eps``, momentum as ``1 - m``, ``keep="last"``: fastai's
``SentenceEncoder`` window), ports the encoder by the LM table and the head by
:mod:`convert.classifier_mapping`, then compares Keras probabilities with the torch reference of
fastai's forward (:class:`~convert.classifier_reference.ReferenceClassifier`) on texts short,
longer than ``bptt`` and longer than ``max_len``. It writes ``model.keras``, ``task.json`` and
``spm.model`` (the directory stage 10 writes, so ``--interactive``, reload and stage 13 take it)
beside the target, reloads ``model.keras`` and checks it again, and only then renames it into
place. Any failure, parity included, leaves nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convert.classifier_mapping import port_head
from convert.classifier_reference import ReferenceClassifier
from convert.mapping import port_weights
from convert.tokenizer import check_spm_model
from convert.verify import SENTENCES, ParityReport, ParityRow, check
from ulmfit_core.artifacts import atomic_dir, library_versions, sha256_file
from ulmfit_core.classifier_config import read_classifier_head
from ulmfit_core.errors import InputError
from ulmfit_core.ids import BOS_ID, EOS_ID, PAD_ID
from ulmfit_core.lm_config import sidecar_path
from ulmfit_torch.classifier_state import ClassifierState, read_classifier_state
from ulmfit_torch.state_dict import read_sidecar

logger = logging.getLogger(__name__)

__all__ = ["KEEP_DEFAULT", "classifier_task", "convert_classifier", "parity_texts"]

KEEP_DEFAULT = "last"
# With keep="last", how many max_len windows of text a consumer reads before cutting (the
# task's max_seq_len, a memory bound), unless --max-seq-len says otherwise.
DEFAULT_WINDOWS = 4


def parity_texts(
    vocab_size: int, encode, bptt: int, max_len: int, seed: int = 0
) -> list[np.ndarray]:
    """Unpadded ``<s> ... </s>`` id rows: real sentences, then random ids at the lengths where
    fastai's ``SentenceEncoder`` changes behaviour (around ``bptt`` and ``max_len``)."""
    rows = [np.asarray([BOS_ID, *ids, EOS_ID], np.int32) for ids in encode(list(SENTENCES))]
    rng = np.random.default_rng(seed)
    lengths = (3, bptt - 1, bptt, bptt + 1, 2 * bptt + 5, max_len, max_len + 1)
    lengths += (max_len + bptt + 3, 2 * max_len + 7)
    for length in sorted(set(lengths)):
        ids = rng.integers(4, vocab_size, size=length).astype(np.int32)  # no special ids inside
        ids[0], ids[-1] = BOS_ID, EOS_ID
        rows.append(ids)
    return rows


def _padded(rows: list[np.ndarray]) -> np.ndarray:
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), PAD_ID, np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids


def _parity(
    model: Any, reference: dict[str, np.ndarray], rows: list[np.ndarray], what: str
) -> ParityReport:
    """Keras pooled features and probabilities on post-padded batches (longest first, 8 rows at
    a time) vs the reference's, text by text."""
    import keras

    from ulmfit_keras.models.pooled_head import POOLING_NAME

    probe = keras.Model(model.input, [model.get_layer(POOLING_NAME).output, model.output])
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    got = {name: np.zeros_like(value) for name, value in reference.items()}
    for start in range(0, len(order), 8):
        chunk = order[start : start + 8]
        pooled, probs = probe(_padded([rows[i] for i in chunk]), training=False)
        got["pooled"][chunk], got["probabilities"][chunk] = np.asarray(pooled), np.asarray(probs)
    report_rows = []
    for name in ("pooled", "probabilities"):
        diff = np.abs(got[name].astype(np.float64) - reference[name])
        scale = float(np.abs(reference[name]).max())
        report_rows.append(ParityRow(name, float(diff.max()), float(diff.mean()), scale))
    longest = max(len(r) for r in rows)
    notes = (f"{len(rows)} texts of 3..{longest} tokens, each its own fastai forward",)
    return ParityReport(what, tuple(report_rows), sum(len(r) for r in rows), len(rows), notes)


def classifier_task(state: ClassifierState, keep: str, max_seq_len: int) -> dict[str, Any]:
    """``task.json`` of a converted classifier, in the keys stage 10 writes, plus its origin."""
    head = state.head
    return {
        "task": "classifier",
        "head": "classic",
        "labels": list(head.labels),
        "max_seq_len": max_seq_len,
        "fixed_seq_len": None,
        "model_type": "from_cp",
        "export_dir": None,
        "keep": keep,
        "bptt": head.bptt,
        "max_len": head.max_len,
        "lm_config": state.config.to_dict(),
    }


def _build_keras(state: ClassifierState, keep: str) -> Any:
    from ulmfit_keras import ULMFiTClassifier, build_encoder  # TensorFlow only when converting

    head = state.head
    if len(head.lin_ftrs) != 1:
        raise InputError(
            f"the classifier head has hidden layers {head.lin_ftrs}; the Keras classifier has "
            "exactly one (fastai's default lin_ftrs=[50]): train it with one hidden layer"
        )
    encoder, lm = build_encoder(state.config.to_dict())
    port_weights(state.encoder, lm)
    dropouts = head.head_dropouts or [0.0, 0.0]
    model = ULMFiTClassifier(
        backbone=encoder,
        num_classes=len(head.labels),
        hidden_dim=head.lin_ftrs[0],
        dropout=dropouts,
        keep=keep,
        max_len=head.max_len,
        bptt=head.bptt,
        bn_momentum=1.0 - head.bn_momentum,  # PyTorch's convention -> Keras'
        bn_epsilon=head.bn_eps,
    )
    port_head(state, model)
    return model


def convert_classifier(cfg: Any, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Convert the classifier ``checkpoint`` (loaded from ``cfg.pretrained_model``) into the
    task directory ``cfg.out_path``; returns what was measured (module docstring).

    Args:
        cfg: the :class:`~convert.pipeline.ConvertConfig` (``keep``, ``max_seq_len``, the
            assertions, ``verify``, ``tolerance``).

    Raises:
        InputError: a bad file or sidecar, an SPM model whose vocabulary differs, a flag that
            contradicts the file, or a :class:`~convert.verify.ParityError`.
    """
    from ulmfit_tasks.task_dir import MODEL_FILE, load_task_model, write_task_files

    started = time.perf_counter()
    source = Path(cfg.pretrained_model)
    sidecar = sidecar_path(source)
    state = read_classifier_state(
        checkpoint,
        read_classifier_head(sidecar),
        str(source),
        read_sidecar(source),
        sidecar_name=str(sidecar),
    )
    cfg.check_assertions(state.config, f"{state.encoder.layout.name} classifier")
    if cfg.fixed_seq_len is not None:
        raise InputError(
            "--fixed-seq-len is for language models; a classifier's task directory has a "
            "dynamic length (stage 13 fixes lengths where a format needs them)"
        )
    config = state.config
    spm = check_spm_model(
        cfg.spm_model_file, config.vocab_size, config.spm_model_sha256, str(source)
    )
    head = state.head
    keep = cfg.keep or KEEP_DEFAULT
    max_seq_len = cfg.max_seq_len or (
        DEFAULT_WINDOWS * head.max_len if keep == "last" else head.max_len
    )
    if max_seq_len < head.max_len:
        raise InputError(
            f"--max-seq-len {max_seq_len} is below the classifier's max_len {head.max_len}"
        )
    model = _build_keras(state, keep)
    reports: dict[str, ParityReport] = {}
    rows: list[np.ndarray] = []
    reference = None
    if cfg.verify:
        rows = parity_texts(
            config.vocab_size, spm.processor.encode, head.bptt, head.max_len, cfg.seed
        )
        if keep == "first":  # fastai's semantics hold up to max_len; beyond, this model cuts
            rows = [row for row in rows if len(row) <= head.max_len]
        reference = ReferenceClassifier(state).outputs(rows)
        reports["keras"] = check(_parity(model, reference, rows, "keras vs pytorch"), cfg.tolerance)
    else:
        logger.warning("--no-verify: the converted classifier is NOT checked against PyTorch")
    task = classifier_task(state, keep, max_seq_len)
    task["source"] = {"file": source.name, "sha256": sha256_file(source), "sidecar": sidecar.name}
    with atomic_dir(cfg.out_path) as tmp:
        model.save(tmp / MODEL_FILE)
        write_task_files(tmp, spm.path, task)
        if reference is not None:
            reloaded = load_task_model(tmp, task)
            reports["reloaded"] = check(
                _parity(reloaded, reference, rows, "reloaded model.keras vs pytorch"), cfg.tolerance
            )
        task["conversion"] = {
            "verified": cfg.verify,
            "tolerance": cfg.tolerance,
            "parity": {name: report.to_dict() for name, report in reports.items()},
            "versions": library_versions("tensorflow", "keras", "torch", "sentencepiece"),
        }
        write_task_files(tmp, spm.path, task)
        if cfg.out_path.exists() and not cfg.overwrite:
            raise InputError(f"output directory {cfg.out_path} appeared during the conversion")
    seconds = time.perf_counter() - started
    logger.info("converted classifier %s -> %s in %.1f s", source, cfg.out_path, seconds)
    return {"state": state, "reports": reports, "seconds": seconds, "task": task}
