"""The conversion, end to end: read, convert config, port weights, verify, write, re-verify.

:func:`prepare` does everything in memory (nothing is written): load the ``.pth`` safely,
detect its layout and merge the sidecar (:mod:`convert.layout`), check the SPM model, build the
Keras LM and port the weights through the key table (:mod:`convert.mapping`), then, unless
``verify=False``, compare it with the PyTorch reference layer by layer and check masking
(:mod:`convert.verify`). :func:`convert` then writes the output tree into a temporary directory
beside ``out_path``, reloads what it wrote (Keras weights and SavedModel) and checks it against
the PyTorch reference again, writes ``config.json`` with the figures, and only then renames the
directory into place. Any failure leaves no output directory.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convert.export import (
    write_config,
    write_fastai_copy,
    write_keras_weights,
    write_saved_model,
)
from convert.layout import CheckpointLayout, convert_config
from convert.mapping import WeightPlan, port_weights
from convert.reference import ReferenceLM, build_reference, layer_names
from convert.tokenizer import SpmModel, check_spm_model, write_tokenizer
from convert.verify import (
    DEFAULT_TOLERANCE,
    SENTENCES,
    ParityError,
    ParityReport,
    check,
    compare_outputs,
    keras_probe,
    masking_report,
    merge_reports,
    pad_batch,
    parity_batches,
    parity_report,
)
from pretraining_utils.checkpoint_io import load_pth
from ulmfit_core.artifacts import atomic_dir, library_versions, sha256_file
from ulmfit_core.errors import InputError
from ulmfit_core.export_layout import KERAS_WEIGHTS_DIR, SAVED_MODEL_DIR, weights_file_name
from ulmfit_core.ids import PAD_ID
from ulmfit_core.lm_config import LMConfig, sidecar_path

logger = logging.getLogger(__name__)

__all__ = ["ConvertConfig", "ConvertSummary", "Prepared", "convert", "prepare"]

EXPORT_FORMAT = "ulmfit-keras-export"
EXPORT_VERSION = 1
_VERSIONED = ("tensorflow", "tensorflow-text", "keras", "torch", "sentencepiece", "numpy")


@dataclass(frozen=True)
class ConvertConfig:
    """One conversion (the CLI's flags).

    Args:
        pretrained_model: the fastai ``.pth`` (``Learner.save`` file or bare state dict).
        spm_model_file: its SentencePiece ``.model``.
        out_path: the output directory (must not exist unless ``overwrite``).
        fixed_seq_len: static sequence length of the SavedModel; ``None``: dynamic ("ragged").
        qrnn: assert the architecture (``True`` QRNN, ``False`` AWD-LSTM, ``None`` no check).
        num_recurrent_layers: assert the number of recurrent layers.
        overwrite: replace an existing ``out_path`` (only once the new one is complete).
        verify: run the parity checks (PyTorch vs Keras, masking, reloaded artifacts).
        tolerance: max ``|diff|`` allowed in every check.
        seed: seed of the random parity batches.
    """

    pretrained_model: Path
    spm_model_file: Path
    out_path: Path
    fixed_seq_len: int | None = None
    qrnn: bool | None = None
    num_recurrent_layers: int | None = None
    overwrite: bool = False
    verify: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fixed_seq_len is not None and self.fixed_seq_len < 2:
            raise InputError(
                f"--fixed-seq-len must be at least 2 (<s> and </s>), got {self.fixed_seq_len}"
            )
        if not self.tolerance > 0:
            raise InputError(f"--tolerance must be positive, got {self.tolerance}")


@dataclass
class Prepared:
    """Everything :func:`prepare` built, in memory."""

    source: Path
    state_dict: dict[str, Any]
    layout: CheckpointLayout
    config: LMConfig
    plan: WeightPlan
    spm: SpmModel
    encoder: Any
    lm: Any
    reference: ReferenceLM | None = None
    batches: list[np.ndarray] = field(default_factory=list)
    reports: dict[str, ParityReport] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ConvertSummary:
    """What :func:`convert` wrote and measured."""

    out_path: Path
    layout: str
    config: LMConfig
    reports: dict[str, ParityReport]
    seconds: dict[str, float]
    verified: bool


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def _check_out_path(cfg: ConvertConfig) -> None:
    out = cfg.out_path
    if out.exists() and not cfg.overwrite:
        raise InputError(f"output directory {out} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory")
    inputs = (cfg.pretrained_model.resolve().parent, cfg.spm_model_file.resolve().parent)
    if out.resolve() in inputs:  # --overwrite would delete the inputs with the old directory
        raise InputError(f"output directory {out} holds the inputs; choose another --out-path")


def prepare(cfg: ConvertConfig) -> Prepared:
    """Read, convert and (unless ``cfg.verify`` is off) verify, all in memory.

    Raises:
        InputError: a bad input (see :mod:`convert.layout`, :mod:`convert.mapping`,
            :mod:`convert.tokenizer`), or :class:`ParityError` when Keras and PyTorch disagree.
    """
    from ulmfit_keras import build_encoder  # TensorFlow: imported only when converting

    seconds: dict[str, float] = {}
    source = cfg.pretrained_model
    with _timed(seconds, "read .pth"):
        state = load_pth(source)
        state_dict = state["model"]
        extra = sorted(set(state) - {"model"})
        if extra:
            logger.info("%s: not converted (training state): %s", source, extra)
    with _timed(seconds, "convert config"):
        layout, config = convert_config(
            state_dict, source, qrnn=cfg.qrnn, num_recurrent_layers=cfg.num_recurrent_layers
        )
        spm = check_spm_model(
            cfg.spm_model_file, layout.vocab_size, config.spm_model_sha256, str(source)
        )
        if config.spm_model_sha256 is None:
            config = config.replace(spm_model_sha256=spm.sha256)
    with _timed(seconds, "build keras"):
        encoder, lm = build_encoder(config.to_dict())
    with _timed(seconds, "port weights"):
        plan = port_weights(state_dict, lm, layout, str(source))
    prepared = Prepared(source, state_dict, layout, config, plan, spm, encoder, lm)
    prepared.seconds = seconds
    if cfg.verify:
        with _timed(seconds, "verify keras"):
            _verify_in_memory(prepared, cfg)
    else:
        logger.warning("--no-verify: the converted model is NOT checked against PyTorch")
    return prepared


def _verify_in_memory(prepared: Prepared, cfg: ConvertConfig) -> None:
    layout = prepared.layout
    prepared.reference = build_reference(prepared.state_dict, layout, prepared.plan)
    prepared.batches = parity_batches(layout.vocab_size, prepared.spm.encode, seed=cfg.seed)
    report = check(parity_report(prepared.reference, prepared.lm, prepared.batches), cfg.tolerance)
    logger.info("%s", report.format_table())
    names = layer_names(layout.arch, layout.n_layers)
    probe = keras_probe(prepared.lm, layout.arch, layout.n_layers)
    rows = [batch[0] for batch in prepared.batches if batch.shape[0] == 1]
    masking = check(masking_report(probe, rows, names[-2:]), cfg.tolerance)
    logger.info("%s", masking.format_table())
    prepared.reports.update({"keras": report, "masking": masking})


# ---------------------------------------------------------------------------------------------
# Checks of the written artifacts
# ---------------------------------------------------------------------------------------------


def _torch_outputs(reference: ReferenceLM) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """``ids -> {"encoder_output", "logits"}`` of the PyTorch reference."""
    last = layer_names(reference.layout.arch, reference.layout.n_layers)[-2]

    def run(ids: np.ndarray) -> dict[str, np.ndarray]:
        out = reference.run(ids)
        return {"encoder_output": out[last], "logits": out["logits"]}

    return run


def _check_reloaded_keras(prepared: Prepared, out_dir: Path, batches: list[np.ndarray]):
    """``keras_weights/`` + ``config.json``, rebuilt by the downstream loader, vs PyTorch."""
    from ulmfit_keras import load_language_model

    _, reloaded_lm = load_language_model(out_dir)
    what = "reloaded keras_weights vs pytorch"
    return parity_report(prepared.reference, reloaded_lm, batches, what=what)


def _check_saved_model(
    prepared: Prepared, loaded: Any, batches: list[np.ndarray], fixed_seq_len: int | None
) -> ParityReport:
    """The SavedModel's signatures vs PyTorch.

    ``numericalized_encoder`` and ``lm_logits`` get each batch post-padded to the fixed length
    (when set); ``string_encoder`` and ``spm_processor`` must give exactly sentencepiece's ids
    (with BOS/EOS, cut and padded the same way) for the real sentences, and ``string_encoder``'s
    output at valid positions must match each sentence run alone through PyTorch.

    Raises:
        ParityError: the tokenization or the mask differs (the numbers are checked by the
            caller, with the tolerance).
    """
    import tensorflow as tf

    torch_run = _torch_outputs(prepared.reference)

    def id_pairs():
        for ids in batches:
            token_ids = tf.constant(pad_batch(list(ids), fixed_seq_len))  # post-pad with 1
            width = ids.shape[1]
            got = {
                "encoder_output": loaded.numericalized_encoder(token_ids)["output"][:, :width],
                "logits": loaded.lm_logits(token_ids)["output"][:, :width],
            }
            yield got, torch_run(ids)

    id_report = compare_outputs(id_pairs(), ["encoder_output", "logits"], "id signatures")

    n = fixed_seq_len
    expected = [
        np.asarray(ids[:n] if n else ids, np.int32) for ids in prepared.spm.encode(SENTENCES)
    ]
    want_ids = pad_batch(expected, n)
    text = tf.constant(list(SENTENCES))
    encoded = loaded.string_encoder(text)
    for signature, result in (
        ("string_encoder", encoded),
        ("spm_processor", loaded.spm_processor(text)),
    ):
        got_ids = result["numericalized"].numpy()
        if got_ids.shape != want_ids.shape or not np.array_equal(got_ids, want_ids):
            raise ParityError(
                f"the SavedModel's {signature} tokenizes differently from sentencepiece: "
                f"{got_ids.tolist()} vs {want_ids.tolist()}"
            )
        if not np.array_equal(result["mask"].numpy(), want_ids != PAD_ID):
            raise ParityError(f"the SavedModel's {signature} mask is not numericalized != 1")
    hidden = encoded["output"].numpy()
    text_pairs = (
        (
            {"string_encoder": hidden[i, : len(ids)]},
            {"string_encoder": torch_run(ids[None, :])["encoder_output"][0]},
        )
        for i, ids in enumerate(expected)
    )
    note = f"string_encoder/spm_processor ids equal sentencepiece's on {len(expected)} sentences"
    text_report = compare_outputs(text_pairs, ["string_encoder"], "text", notes=(note,))
    return merge_reports("reloaded saved_model vs pytorch", id_report, text_report)


def verify_export(prepared: Prepared, out_dir: Path, cfg: ConvertConfig) -> None:
    """Reload the written Keras weights and SavedModel and check them against PyTorch.

    Raises:
        ParityError: a reloaded artifact differs from PyTorch beyond ``cfg.tolerance``, or the
            SavedModel tokenizes differently from sentencepiece.
    """
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the SentencePiece op for loading

    # A fixed-length SavedModel takes at most that many ids: cut the batches to it.
    n = cfg.fixed_seq_len
    batches = [ids if n is None else ids[:, :n] for ids in prepared.batches]
    keras_report = check(_check_reloaded_keras(prepared, out_dir, batches), cfg.tolerance)
    logger.info("%s", keras_report.format_table())
    loaded = tf.saved_model.load(str(out_dir / SAVED_MODEL_DIR))
    saved_report = check(_check_saved_model(prepared, loaded, batches, n), cfg.tolerance)
    logger.info("%s", saved_report.format_table())
    prepared.reports["reloaded_keras"] = keras_report
    prepared.reports["saved_model"] = saved_report


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _config_json(prepared: Prepared, cfg: ConvertConfig, verified: bool) -> dict[str, Any]:
    source = cfg.pretrained_model
    sidecar = sidecar_path(source)
    data = prepared.config.to_dict()
    data["conversion"] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "source": {
            "file": source.name,
            "sha256": sha256_file(source),
            "layout": prepared.layout.name,
            "sidecar": sidecar.name if sidecar.is_file() else None,
        },
        "spm_model": {"file": prepared.spm.path.name, "sha256": prepared.spm.sha256},
        "fixed_seq_len": cfg.fixed_seq_len,
        "sequence_axis": "fixed" if cfg.fixed_seq_len else "dynamic (padded to the batch)",
        "keras_weights": f"{KERAS_WEIGHTS_DIR}/{weights_file_name(source.stem)}",
        "signatures": ["string_encoder", "numericalized_encoder", "spm_processor", "lm_logits"],
        "verified": verified,
        "tolerance": cfg.tolerance,
        "parity": {name: report.to_dict() for name, report in prepared.reports.items()},
        "versions": library_versions(*_VERSIONED),
    }
    return data


def convert(cfg: ConvertConfig) -> ConvertSummary:
    """Convert ``cfg.pretrained_model`` into ``cfg.out_path`` (see the module docstring).

    Raises:
        InputError: bad inputs, an existing output directory without ``overwrite``, or a
            :class:`ParityError`; no output directory is left behind.
    """
    _check_out_path(cfg)
    start = time.perf_counter()
    prepared = prepare(cfg)
    seconds = prepared.seconds
    exp_name = cfg.pretrained_model.stem
    with atomic_dir(cfg.out_path) as tmp:
        with _timed(seconds, "write keras weights"):
            write_keras_weights(prepared.lm, tmp, exp_name)
        with _timed(seconds, "write saved_model"):
            write_saved_model(
                prepared.encoder, prepared.lm, prepared.spm.path, tmp, cfg.fixed_seq_len
            )
        with _timed(seconds, "copy spm and .pth"):
            write_tokenizer(prepared.spm, tmp)
            write_fastai_copy(cfg.pretrained_model, tmp, sidecar_path(cfg.pretrained_model))
        # load_language_model reads config.json: write it before the reload checks, then again
        # with their figures.
        write_config(tmp, _config_json(prepared, cfg, verified=False))
        if cfg.verify:
            with _timed(seconds, "verify reloaded"):
                verify_export(prepared, tmp, cfg)
        write_config(tmp, _config_json(prepared, cfg, verified=cfg.verify))
        if cfg.out_path.exists() and not cfg.overwrite:  # created while we were converting
            raise InputError(f"output directory {cfg.out_path} appeared during the conversion")
    seconds["total"] = time.perf_counter() - start
    logger.info(
        "converted %s (%s) -> %s in %.1f s",
        cfg.pretrained_model,
        prepared.layout.name,
        cfg.out_path,
        seconds["total"],
    )
    return ConvertSummary(
        out_path=cfg.out_path,
        layout=prepared.layout.name,
        config=prepared.config,
        reports=dict(prepared.reports),
        seconds=dict(seconds),
        verified=cfg.verify,
    )


def output_size(path: Path) -> int:
    """Bytes under ``path`` (for the summary line)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
