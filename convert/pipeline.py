"""The conversion, end to end: read, convert config, port weights, verify, write, re-verify.

:func:`prepare` does everything in memory (nothing is written): load the ``.pth`` safely and
read it through the one state-dict reader (:func:`ulmfit_torch.state_dict.read_lm_state`:
layout, model config with the sidecar merged in, fail-hard key checks), check the CLI's
assertions and the SPM model, build the Keras LM and port the weights through the key table
(:mod:`convert.mapping`), then, unless ``verify=False``, compare it with the PyTorch reference
layer by layer and check masking (:func:`convert.checks.verify_in_memory`). :func:`convert`
then writes the output tree into a temporary directory beside ``out_path``, reloads what it
wrote (Keras weights and SavedModel) and checks it against the PyTorch reference again
(:func:`convert.checks.verify_export`), writes ``config.json`` with the figures, and only then
renames the directory into place. Any failure leaves no output directory.

Each verification step returns its reports; the pipeline collects them (nothing is filled in
after the fact).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.checks import InMemoryChecks, verify_export, verify_in_memory
from convert.classifier_convert import convert_classifier
from convert.export import (
    write_config,
    write_fastai_copy,
    write_keras_weights,
    write_saved_model,
)
from convert.mapping import WeightPlan, port_weights
from convert.reference import ReferenceLM
from convert.tokenizer import SpmModel, check_spm_model, write_tokenizer
from convert.verify import DEFAULT_TOLERANCE, ParityReport
from ulmfit_core.artifacts import atomic_dir, library_versions, sha256_file
from ulmfit_core.errors import InputError
from ulmfit_core.export_layout import KERAS_WEIGHTS_DIR, weights_file_name
from ulmfit_core.lm_config import LMConfig, sidecar_path
from ulmfit_torch.checkpoint_io import load_pth
from ulmfit_torch.classifier_state import is_classifier_state
from ulmfit_torch.state_dict import CheckpointLayout, LMState, read_lm_state, read_sidecar

logger = logging.getLogger(__name__)

__all__ = ["ConvertConfig", "ConvertSummary", "Prepared", "convert", "prepare", "read_checkpoint"]

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
        keep: a classifier's long-text pooling, ``"last"`` (fastai's) or ``"first"``
            (:mod:`convert.classifier_convert`); ``None``: ``"last"``. Not for LMs.
        max_seq_len: a classifier's ``task.json`` input bound (``None``: from its ``max_len``).
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
    keep: str | None = None
    max_seq_len: int | None = None

    def check_assertions(self, config: LMConfig, layout: str) -> None:
        """Raise if ``--qrnn/--awd-lstm`` or ``--num-recurrent-layers`` contradict the file."""
        source = self.pretrained_model
        if self.qrnn is not None and self.qrnn != (config.arch == "qrnn"):
            flag = "--qrnn" if self.qrnn else "--awd-lstm"
            raise InputError(
                f"{flag} was given, but {source} holds an {config.arch} model "
                f"({layout} keys); drop the flag: the architecture is read from the file"
            )
        if self.num_recurrent_layers is not None and self.num_recurrent_layers != config.n_layers:
            raise InputError(
                f"--num-recurrent-layers {self.num_recurrent_layers} was given, but {source} has "
                f"{config.n_layers} recurrent layers; drop the flag: it is read from the file"
            )

    def __post_init__(self) -> None:
        if self.fixed_seq_len is not None and self.fixed_seq_len < 2:
            raise InputError(
                f"--fixed-seq-len must be at least 2 (<s> and </s>), got {self.fixed_seq_len}"
            )
        if not self.tolerance > 0:
            raise InputError(f"--tolerance must be positive, got {self.tolerance}")


@dataclass(frozen=True)
class Prepared:
    """Everything :func:`prepare` built, in memory.

    ``state`` is the read checkpoint, its config completed with the SPM model's hash;
    ``checks`` the in-memory verification (``None`` with ``verify=False``).
    """

    source: Path
    state: LMState
    plan: WeightPlan
    spm: SpmModel
    encoder: Any
    lm: Any
    checks: InMemoryChecks | None
    seconds: Mapping[str, float]

    @property
    def layout(self) -> CheckpointLayout:
        return self.state.layout

    @property
    def config(self) -> LMConfig:
        return self.state.config

    @property
    def reference(self) -> ReferenceLM | None:
        return None if self.checks is None else self.checks.reference

    @property
    def batches(self) -> tuple[np.ndarray, ...]:
        return () if self.checks is None else self.checks.batches

    @property
    def reports(self) -> dict[str, ParityReport]:
        return {} if self.checks is None else dict(self.checks.reports)


@dataclass(frozen=True)
class ConvertSummary:
    """What :func:`convert` wrote and measured."""

    out_path: Path
    layout: str
    config: LMConfig
    reports: dict[str, ParityReport]
    seconds: dict[str, float]
    verified: bool
    task: dict[str, Any] | None = None  # a classifier's task.json (its output is a task dir)


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


def read_checkpoint(cfg: ConvertConfig, checkpoint: Mapping[str, Any] | None = None) -> LMState:
    """Load ``cfg.pretrained_model`` (unless given loaded) and its sidecar, read them, and check
    the CLI's assertions.

    Raises:
        InputError: a bad file (see :func:`ulmfit_torch.state_dict.read_lm_state`), or a flag
            that contradicts it (both are named).
    """
    source = cfg.pretrained_model
    if checkpoint is None:
        checkpoint = load_pth(source)
    if cfg.keep is not None or cfg.max_seq_len is not None:
        raise InputError(
            f"--keep and --max-seq-len are for classifiers; {source} is a language model"
        )
    state = read_lm_state(
        checkpoint,
        str(source),
        read_sidecar(source),
        sidecar_name=str(sidecar_path(Path(source))),
    )
    if state.layout.extra:
        logger.info("%s: not converted (training state): %s", source, list(state.layout.extra))
    cfg.check_assertions(state.config, state.layout.name)
    return state


def prepare(cfg: ConvertConfig, checkpoint: Mapping[str, Any] | None = None) -> Prepared:
    """Read, convert and (unless ``cfg.verify`` is off) verify, all in memory.

    Raises:
        InputError: a bad input (see :mod:`ulmfit_torch.state_dict`, :mod:`convert.mapping`,
            :mod:`convert.tokenizer`), or :class:`ParityError` when Keras and PyTorch disagree.
    """
    from ulmfit_keras import build_encoder  # TensorFlow: imported only when converting

    seconds: dict[str, float] = {}
    source = cfg.pretrained_model
    with _timed(seconds, "read .pth"):
        state = read_checkpoint(cfg, checkpoint)
    with _timed(seconds, "convert config"):
        config = state.config
        spm = check_spm_model(
            cfg.spm_model_file, config.vocab_size, config.spm_model_sha256, str(source)
        )
        if config.spm_model_sha256 is None:
            state = dataclasses.replace(state, config=config.replace(spm_model_sha256=spm.sha256))
    with _timed(seconds, "build keras"):
        encoder, lm = build_encoder(state.config.to_dict())
    with _timed(seconds, "port weights"):
        plan = port_weights(state, lm)
    checks = None
    if cfg.verify:
        with _timed(seconds, "verify keras"):
            checks = verify_in_memory(state, lm, spm, seed=cfg.seed, tolerance=cfg.tolerance)
    else:
        logger.warning("--no-verify: the converted model is NOT checked against PyTorch")
    return Prepared(source, state, plan, spm, encoder, lm, checks, dict(seconds))


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _config_json(
    prepared: Prepared,
    cfg: ConvertConfig,
    reports: Mapping[str, ParityReport],
    verified: bool,
) -> dict[str, Any]:
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
        "parity": {name: report.to_dict() for name, report in reports.items()},
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
    checkpoint = load_pth(cfg.pretrained_model)
    if is_classifier_state(checkpoint):
        done = convert_classifier(cfg, checkpoint)
        state = done["state"]
        return ConvertSummary(
            out_path=cfg.out_path,
            layout=f"{state.encoder.layout.name} classifier",
            config=state.config,
            reports=done["reports"],
            seconds={"total": time.perf_counter() - start},
            verified=cfg.verify,
            task=done["task"],
        )
    prepared = prepare(cfg, checkpoint)
    seconds = dict(prepared.seconds)
    reports = prepared.reports
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
        write_config(tmp, _config_json(prepared, cfg, reports, verified=False))
        if prepared.checks is not None:
            with _timed(seconds, "verify reloaded"):
                reloaded = verify_export(
                    prepared.checks,
                    prepared.spm,
                    tmp,
                    fixed_seq_len=cfg.fixed_seq_len,
                    tolerance=cfg.tolerance,
                )
            reports = {**reports, **reloaded}
        write_config(tmp, _config_json(prepared, cfg, reports, verified=cfg.verify))
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
        reports=reports,
        seconds=seconds,
        verified=cfg.verify,
    )


def output_size(path: Path) -> int:
    """Bytes under ``path`` (for the summary line)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
