"""Parity between the PyTorch reference and the Keras model: a report, and a check that raises.

:func:`parity_report` runs both models on the same unpadded token batches and returns max and
mean ``|diff|`` per layer (the embedding, every recurrent layer, the logits). The converter
calls it before anything is saved and again on the reloaded artifacts; the tests call it too.
:func:`check` raises :class:`ParityError` above the tolerance. :func:`masking_report` checks
that post-padded, masked Keras outputs at valid positions equal the unpadded run.

Batches (:func:`parity_batches`): random ids (``<unk>`` included, never ``<pad>``) and a few
real sentences tokenized with the SPM model, each sentence its own unpadded batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from convert.reference import ReferenceLM, layer_names
from ulmfit_core.errors import InputError
from ulmfit_core.ids import PAD_ID
from ulmfit_core.lm_config import LMConfig

logger = logging.getLogger(__name__)

__all__ = [
    "SENTENCES",
    "ParityError",
    "ParityReport",
    "ParityRow",
    "check",
    "compare_outputs",
    "keras_probe",
    "masking_report",
    "merge_reports",
    "pad_batch",
    "parity_batches",
    "parity_report",
]

DEFAULT_TOLERANCE = 1e-5

# Real sentences for the checks (any language's SPM model tokenizes them; unknown pieces
# become <unk>, an ordinary token). Lengths vary so that the masking check pads.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Language models are trained to predict the next token of a text.",
    "Hello!",
    "A converted model must compute what the original computed, to float32 rounding.",
    "Zürich, naïve café: 1998 — ünïcödé and 日本語 too.",
)


class ParityError(InputError):
    """Keras and PyTorch disagree beyond the tolerance.

    An :class:`InputError`, so that the CLI reports it in one line: the usual cause is a
    checkpoint whose layout the converter misreads, not a crash.
    """


@dataclass(frozen=True)
class ParityRow:
    """One compared output: its name, max and mean ``|diff|``, and the largest ``|value|``."""

    name: str
    max_abs_diff: float
    mean_abs_diff: float
    max_abs_value: float


@dataclass(frozen=True)
class ParityReport:
    """Per-layer differences between two models over the same batches.

    ``what`` says which two things were compared (e.g. ``"keras vs pytorch"``); ``tokens`` is
    the number of token positions compared; ``batches`` the number of compared calls (rows,
    for the checks that run sequences one by one).
    """

    what: str
    rows: tuple[ParityRow, ...]
    tokens: int
    batches: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def row(self, name: str) -> ParityRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r} in the {self.what} report")

    @property
    def max_abs_diff(self) -> float:
        return max(row.max_abs_diff for row in self.rows)

    @property
    def encoder_max_abs_diff(self) -> float:
        """Max ``|diff|`` of the encoder output: the row before ``logits`` (the last recurrent
        layer in a per-layer report, ``encoder_output`` in a SavedModel report)."""
        names = [row.name for row in self.rows]
        return self.rows[names.index("logits") - 1].max_abs_diff

    @property
    def logits_max_abs_diff(self) -> float:
        return self.row("logits").max_abs_diff

    def format_table(self) -> str:
        """An aligned text table, one line per compared output."""
        width = max(len(row.name) for row in self.rows)
        lines = [
            f"{self.what} ({self.batches} batches, {self.tokens} tokens)",
            f"  {'output':<{width}}  {'max |diff|':>10}  {'mean |diff|':>11}  {'max |value|':>11}",
        ]
        lines += [
            f"  {row.name:<{width}}  {row.max_abs_diff:>10.3g}  {row.mean_abs_diff:>11.3g}  "
            f"{row.max_abs_value:>11.3g}"
            for row in self.rows
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "tokens": self.tokens,
            "batches": self.batches,
            "max_abs_diff": self.max_abs_diff,
            "rows": [asdict(row) for row in self.rows],
            "notes": list(self.notes),
        }


class _Accumulator:
    """Running max / sum of ``|diff|`` per named output."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.max = dict.fromkeys(names, 0.0)
        self.sum = dict.fromkeys(names, 0.0)
        self.count = dict.fromkeys(names, 0)
        self.value = dict.fromkeys(names, 0.0)
        self.tokens = 0
        self.batches = 0

    def add(self, name: str, got: np.ndarray, want: np.ndarray) -> None:
        if got.shape != want.shape:
            raise ParityError(f"{name}: shapes differ, {got.shape} vs {want.shape}")
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        if not np.isfinite(diff).all():
            raise ParityError(f"{name}: non-finite outputs")
        self.max[name] = max(self.max[name], float(diff.max(initial=0.0)))
        self.sum[name] += float(diff.sum())
        self.count[name] += diff.size
        self.value[name] = max(self.value[name], float(np.abs(want).max(initial=0.0)))

    def report(self, what: str, notes: Sequence[str] = ()) -> ParityReport:
        rows = tuple(
            ParityRow(
                name,
                self.max[name],
                self.sum[name] / max(self.count[name], 1),
                self.value[name],
            )
            for name in self.names
        )
        return ParityReport(what, rows, self.tokens, self.batches, tuple(notes))


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def parity_batches(
    vocab_size: int,
    encode: Callable[[Sequence[str]], list[list[int]]] | None = None,
    sentences: Sequence[str] = SENTENCES,
    random_shapes: Sequence[tuple[int, int]] = ((4, 40), (2, 7)),
    seed: int = 0,
) -> list[np.ndarray]:
    """Unpadded int32 token batches: random ids, then one batch per tokenized sentence.

    Args:
        vocab_size: ids are drawn from ``[0, vocab_size)`` without the pad id.
        encode: ``texts -> ids`` with BOS/EOS (e.g. ``SentencePieceProcessor.encode``);
            ``None`` leaves the sentences out.
        sentences: the real sentences.
        random_shapes: ``(batch, seq)`` of each random batch.
        seed: the random ids' seed.
    """
    rng = np.random.default_rng(seed)
    batches = []
    for shape in random_shapes:
        ids = rng.integers(0, vocab_size, size=shape)
        ids[ids == PAD_ID] = 0  # <unk> instead: parity is defined on unpadded sequences
        batches.append(ids.astype(np.int32))
    if encode is not None:
        for ids in encode(list(sentences)):
            row = np.asarray(ids, dtype=np.int32)
            if (row == PAD_ID).any():
                raise InputError("the SPM model produced the pad id inside a sentence")
            batches.append(row[None, :])
    return batches


def pad_batch(rows: Sequence[np.ndarray], length: int | None = None) -> np.ndarray:
    """Post-pad 1-D id rows with the pad id into one ``(len(rows), length)`` int32 batch."""
    length = max(len(row) for row in rows) if length is None else length
    batch = np.full((len(rows), length), PAD_ID, dtype=np.int32)
    for i, row in enumerate(rows):
        batch[i, : min(len(row), length)] = row[:length]
    return batch


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def keras_probe(keras_lm: Any, config: LMConfig) -> Callable[[np.ndarray], dict]:
    """``ids -> {output name: array}`` for a Keras LM of ``config``: the embedding, every
    recurrent layer and the logits, from one graph-mode call (a multi-output model over the LM's
    own layers)."""
    import keras
    import tensorflow as tf

    names = layer_names(config)
    # The LM is a functional model over the encoder's layers, so they are found by name.
    outputs = [keras_lm.get_layer(name).output for name in names[:-1]]
    probe = keras.Model(keras_lm.input, [*outputs, keras_lm.output], name="parity_probe")

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)], reduce_retracing=True)
    def run(ids):
        return probe(ids, training=False)

    def call(ids: np.ndarray) -> dict[str, np.ndarray]:
        values = run(tf.constant(ids, dtype=tf.int32))
        return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}

    return call


def compare_outputs(
    pairs: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    names: Sequence[str],
    what: str,
    notes: Sequence[str] = (),
) -> ParityReport:
    """The report of ``(got, want)`` output dicts, one pair per batch (or per row).

    Each array is ``(..., features)``; the token count is the product of the leading axes.
    """
    acc = _Accumulator(names)
    for got, want in pairs:
        for name in names:
            acc.add(name, np.asarray(got[name]), np.asarray(want[name]))
        acc.tokens += int(np.prod(np.shape(want[names[0]])[:-1]))
        acc.batches += 1
    return acc.report(what, notes)


def parity_report(
    torch_ref: ReferenceLM,
    keras_lm: Any,
    batches: Sequence[np.ndarray],
    what: str = "keras vs pytorch",
) -> ParityReport:
    """Max/mean ``|diff|`` per layer between the PyTorch reference and the Keras LM.

    Args:
        torch_ref: the reference built from the same state dict.
        keras_lm: the Keras LM (``build_encoder(config)[1]``) with the converted weights.
        batches: unpadded int32 id batches (:func:`parity_batches`).
        what: the report's title.
    """
    probe = keras_probe(keras_lm, torch_ref.config)
    names = layer_names(torch_ref.config)
    return compare_outputs(((probe(ids), torch_ref.run(ids)) for ids in batches), names, what)


def masking_report(
    run: Callable[[np.ndarray], dict[str, np.ndarray]],
    rows: Sequence[np.ndarray],
    names: Sequence[str],
    what: str = "keras post-padded vs unpadded",
    length: int | None = None,
) -> ParityReport:
    """Outputs at valid positions of a post-padded batch vs each row run alone.

    Args:
        run: ``ids -> {name: array}`` (e.g. :func:`keras_probe`'s), called on the padded batch
            and on each row alone.
        rows: unpadded 1-D id rows of different lengths.
        names: the outputs to compare.
        what: the report's title.
        length: pad to this length (default: the longest row).
    """
    batch = pad_batch(rows, length)
    padded = run(batch)

    def pairs():
        for i, row in enumerate(rows):
            alone = run(np.asarray(row, dtype=np.int32)[None, :])
            got = {name: padded[name][i, : len(row)] for name in names}
            yield got, {name: alone[name][0] for name in names}

    note = f"{len(rows)} rows post-padded to {batch.shape[1]} with id {PAD_ID}"
    return compare_outputs(pairs(), names, what, notes=(note,))


def merge_reports(what: str, *reports: ParityReport) -> ParityReport:
    """One report with the rows (and notes) of several, e.g. a SavedModel's signatures."""
    return ParityReport(
        what,
        tuple(row for report in reports for row in report.rows),
        sum(report.tokens for report in reports),
        sum(report.batches for report in reports),
        tuple(note for report in reports for note in report.notes),
    )


def check(report: ParityReport, tol: float = DEFAULT_TOLERANCE) -> ParityReport:
    """Return ``report`` if every max ``|diff|`` is within ``tol``; else raise.

    Raises:
        ParityError: naming each output above the tolerance and the full table.
    """
    bad = [row for row in report.rows if not row.max_abs_diff <= tol]
    if bad:
        names = ", ".join(f"{row.name} {row.max_abs_diff:.3g}" for row in bad)
        raise ParityError(
            f"parity check failed ({report.what}): max |diff| above {tol:g} for {names}\n"
            f"{report.format_table()}"
        )
    logger.info("%s: max |diff| %.3g <= %g", report.what, report.max_abs_diff, tol)
    return report
