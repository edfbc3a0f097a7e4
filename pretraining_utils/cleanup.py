"""Stage 01: raw text -> normalised sentences, one per line.

The input is read as units: each line (``lines``), or lines joined up to a blank line
(``paragraphs``, for hard-wrapped text), or whichever of the two a sample of the input looks
like (``auto``); see :mod:`pretraining_utils.text_units`. A unit is decoded (invalid UTF-8
replaced and counted), normalised (NFKC, control characters dropped, whitespace collapsed),
split into sentences by nltk's Punkt, optionally lower-cased, and its punctuation is spaced off
the words. Sentences never span units.

Punkt is trained here, on the head of the input itself, because nltk's pretrained models are
a download we cannot rely on; a built-in abbreviation list per language
(:mod:`pretraining_utils.punkt_seeds`) fills in what a small sample cannot teach it
(:mod:`pretraining_utils.punkt`). The parameters used are saved beside the output
(``<out>.punkt.json``) and can be reused with ``punkt_params`` so that several corpora are split
the same way. Punctuation spacing is :mod:`pretraining_utils.punctuation`; the per-chunk work of
the worker processes is :mod:`pretraining_utils.cleanup_worker`.

The input is streamed in chunks of whole units, processed by worker processes in input order,
so memory stays constant on inputs of any size and the output does not depend on the number
of workers.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretraining_utils.cleanup_worker import (
    ChunkResult,
    SentenceOptions,
    init_worker,
    process_chunk,
)
from pretraining_utils.parallel import ordered_map
from pretraining_utils.punkt import PARAMS_SUFFIX, load_punkt_params, train_punkt
from pretraining_utils.punkt_seeds import PUNKT_LANGUAGES
from pretraining_utils.text_units import (
    AUTO,
    INPUT_FORMATS,
    MAX_PARAGRAPH_BYTES,
    PARAGRAPHS,
    STDIN,
    Chunk,
    chunk_units,
    format_size,
    input_files,
    paragraph_chunks,
    read_chunks,
    resolve_format,
    take_head,
)
from ulmfit_core.artifacts import atomic_file, write_json
from ulmfit_core.errors import InputError

logger = logging.getLogger(__name__)

MIB = 1 << 20

# ---------------------------------------------------------------------------------------------
# Configuration and summary


@dataclass(frozen=True)
class CleanupConfig:
    """Everything stage 01 needs; built by the CLI, never from an argv dict.

    Args:
        input_text: a file, a directory (its ``*.txt`` files, recursively, in sorted order)
            or ``Path("-")`` for standard input.
        out_path: the sentences file to write.
        lang: a Punkt language (see :data:`PUNKT_LANGUAGES`); selects the seed abbreviations.
        workers: processes splitting sentences; the output does not depend on it.
        lowercase: lower-case sentences (after splitting, so Punkt still sees case).
        min_words: sentences with fewer whitespace tokens (after punctuation spacing) are
            dropped and counted.
        max_words: sentences with more tokens are dropped and counted; ``None``: no limit.
        punkt_params: a ``.punkt.json`` saved by an earlier run, used instead of training.
        sample_bytes: how much of the input's head Punkt is trained on.
        chunk_bytes: the size of the chunks of whole units sent to the workers.
        input_format: ``lines``, ``paragraphs`` or ``auto``
            (see :mod:`pretraining_utils.text_units`).
        max_paragraph_bytes: in paragraphs mode, a paragraph with no blank line for this
            long is cut (and counted) at the next line end.
    """

    input_text: Path
    out_path: Path
    lang: str = "english"
    workers: int = 1
    lowercase: bool = False
    min_words: int = 1
    max_words: int | None = None
    punkt_params: Path | None = None
    sample_bytes: int = 8 * MIB
    chunk_bytes: int = MIB
    input_format: str = AUTO
    max_paragraph_bytes: int = MAX_PARAGRAPH_BYTES

    def __post_init__(self) -> None:
        # Accept str paths too; frozen, so set through object.
        for name in ("input_text", "out_path", "punkt_params"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.lang not in PUNKT_LANGUAGES:
            raise InputError(
                f"unknown language {self.lang!r}; Punkt supports: {', '.join(PUNKT_LANGUAGES)}"
            )
        if self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        if self.min_words < 0:
            raise InputError(f"min_words must be 0 or more, got {self.min_words}")
        if self.max_words is not None and self.max_words < max(1, self.min_words):
            raise InputError(
                f"max_words ({self.max_words}) must be at least 1 and at least "
                f"min_words ({self.min_words})"
            )
        if self.chunk_bytes < 1 or self.sample_bytes < 0 or self.max_paragraph_bytes < 1:
            raise InputError(
                "chunk_bytes and max_paragraph_bytes must be positive, sample_bytes not negative"
            )
        if self.input_format not in INPUT_FORMATS:
            raise InputError(
                f"unknown input format {self.input_format!r}; use one of {', '.join(INPUT_FORMATS)}"
            )

    @property
    def params_path(self) -> Path:
        """Where the Punkt parameters used are saved: ``<out_path>.punkt.json``."""
        return self.out_path.with_name(self.out_path.name + PARAMS_SUFFIX)


@dataclass(frozen=True)
class CleanupSummary:
    """What a cleanup run read, wrote and dropped."""

    out_path: Path
    params_path: Path
    bytes_in: int
    lines_in: int
    input_format: str  # as used: lines or paragraphs, never auto
    paragraphs: int  # the units read: non-empty lines, or joined paragraphs
    cut_paragraphs: int  # paragraphs cut for having no blank line for max_paragraph_bytes
    max_paragraph_bytes: int
    sentences_out: int
    dropped_short: int
    dropped_long: int
    invalid_bytes: int
    first_invalid_line: int | None
    first_invalid_source: str | None
    seconds: float

    def describe(self) -> str:
        """The one-line summary logged at the end of a run."""
        invalid = f"{self.invalid_bytes:,} invalid UTF-8 bytes"
        if self.invalid_bytes:
            invalid += f" (first on line {self.first_invalid_line} of {self.first_invalid_source})"
        rate = self.bytes_in / MIB / self.seconds if self.seconds > 0 else 0.0
        if self.input_format == PARAGRAPHS:
            units = (
                f"{self.paragraphs:,} paragraphs, {self.cut_paragraphs:,} cut at "
                f"{format_size(self.max_paragraph_bytes)}"
            )
        else:
            units = f"{self.paragraphs:,} non-empty"
        return (
            f"{self.lines_in:,} lines in, read as {self.input_format} ({units}), "
            f"{self.sentences_out:,} sentences out, dropped {self.dropped_short:,} too short "
            f"and {self.dropped_long:,} too long, {invalid}, {self.seconds:.1f} s "
            f"({rate:.1f} MiB/s), wrote {self.out_path}"
        )


# ---------------------------------------------------------------------------------------------
# Training on the head of the input


def _describe_input(input_text: Path) -> str:
    return "standard input" if Path(input_text) == STDIN else str(input_text)


def _empty_input_error(input_text: Path) -> InputError:
    return InputError(
        f"{_describe_input(input_text)} contains no text (only whitespace or nothing at all); "
        "point --input-text at the raw corpus, UTF-8 text"
    )


def _train_on_head(
    chunks: Iterator[Chunk], config: CleanupConfig
) -> tuple[dict[str, Any], list[Chunk]]:
    """Train Punkt on the first ``config.sample_bytes`` of ``chunks``; return the params and
    the chunks consumed, which the caller must still process (stdin cannot be read twice)."""
    head, whole_input = take_head(chunks, config.sample_bytes)
    sample = [text for chunk in head for text in chunk_units(chunk).texts]
    if whole_input and not sample:
        raise _empty_input_error(config.input_text)  # before any worker is started
    head_bytes = sum(len(c.data) for c in head)
    logger.info("training Punkt on the first %.1f MiB of the input", head_bytes / MIB)
    tic = time.perf_counter()
    params = train_punkt(sample, config.lang)
    logger.info(
        "trained Punkt in %.1f s: %d abbreviations (with %s's built-in ones), "
        "%d collocations, %d sentence starters",
        time.perf_counter() - tic,
        len(params["abbrev_types"]),
        config.lang,
        len(params["collocations"]),
        len(params["sent_starters"]),
    )
    return params, head


# ---------------------------------------------------------------------------------------------
# The stage


@dataclass
class _Totals:
    bytes_in: int = 0
    lines: int = 0
    paragraphs: int = 0
    sentences: int = 0
    dropped_short: int = 0
    dropped_long: int = 0
    invalid_bytes: int = 0
    first_invalid_line: int | None = None
    first_invalid_source: str | None = None
    cut_paragraphs: int = 0
    max_paragraph_bytes: int = MAX_PARAGRAPH_BYTES

    def add(self, result: ChunkResult) -> None:
        self.bytes_in += result.nbytes
        self.lines += result.lines
        self.paragraphs += result.paragraphs
        self.sentences += result.sentences
        self.dropped_short += result.dropped_short
        self.dropped_long += result.dropped_long
        self.invalid_bytes += result.invalid_bytes
        if result.first_invalid_line is not None and self.first_invalid_line is None:
            self.first_invalid_line = result.first_invalid_line
            self.first_invalid_source = result.source
            logger.warning(
                "invalid UTF-8 on line %d of %s; replacing it with U+FFFD and counting the "
                "invalid bytes in the summary",
                result.first_invalid_line,
                result.source,
            )
        if result.cut_line is not None:
            self.cut_paragraphs += 1
            if self.cut_paragraphs == 1:
                logger.warning(
                    "no blank line for %s up to line %d of %s; cutting the paragraph there "
                    "and counting such cuts in the summary (if each line is a paragraph, "
                    "pass --input-format lines)",
                    format_size(self.max_paragraph_bytes),
                    result.cut_line,
                    result.source,
                )


def cleanup_corpus(
    config: CleanupConfig, on_bytes: Callable[[int], None] | None = None
) -> CleanupSummary:
    """Run stage 01: write ``config.out_path`` (one sentence per line) and its Punkt params.

    Both files are written atomically: an interrupted or failed run leaves neither.

    Args:
        config: what to read, how to clean it, where to write.
        on_bytes: called with the number of input bytes each time a chunk has been written
            (drives a progress bar).

    Raises:
        InputError: the input is missing or empty, everything was filtered out, or the
            Punkt parameters file is unusable.
    """
    start = time.perf_counter()
    files = input_files(config.input_text)
    out_path = Path(config.out_path)
    if out_path.resolve() in {f.resolve() for f in files if f != STDIN}:
        raise InputError(f"the output {out_path} is also an input; write it somewhere else")

    params: dict[str, Any] | None = None
    if config.punkt_params is not None:
        params = load_punkt_params(config.punkt_params, config.lang)
        logger.info("using Punkt parameters from %s", config.punkt_params)

    options = SentenceOptions(config.lowercase, config.min_words, config.max_words)
    totals = _Totals(max_paragraph_bytes=config.max_paragraph_bytes)
    with atomic_file(out_path) as tmp, open(tmp, "wb") as out:
        # Reading starts inside the block: auto and Punkt training read ahead, which on a slow
        # pipe takes a while, and meanwhile the temporary output shows the stage has started
        # (it is removed if the stage is stopped). With --punkt-params and a given format
        # nothing is read ahead and the output starts at once.
        chunks = read_chunks(files, config.chunk_bytes)
        decision, chunks = resolve_format(chunks, config.input_format)
        logger.info("%s", decision.describe())
        if decision.input_format == PARAGRAPHS:
            chunks = paragraph_chunks(chunks, config.chunk_bytes, config.max_paragraph_bytes)
        if params is None:
            # After the regrouping: Punkt learns from the units it will split.
            params, head = _train_on_head(chunks, config)
            chunks = itertools.chain(head, chunks)
        results = ordered_map(
            process_chunk,
            chunks,
            config.workers,
            initializer=init_worker,
            initargs=(params, options),
        )
        for result in results:
            out.write(result.data)
            totals.add(result)
            if on_bytes is not None:
                on_bytes(result.nbytes)
        if totals.paragraphs == 0:
            raise _empty_input_error(config.input_text)
        if totals.sentences == 0:
            raise InputError(
                f"every sentence was filtered out ({totals.dropped_short:,} shorter than "
                f"{config.min_words} words, {totals.dropped_long:,} longer than "
                f"{config.max_words}); loosen --min-words/--max-words"
            )
        # Inside the atomic block: the params land before the sentences file appears, so a
        # finished output always has its params beside it.
        write_json(config.params_path, params)

    summary = CleanupSummary(
        out_path=out_path,
        params_path=config.params_path,
        bytes_in=totals.bytes_in,
        lines_in=totals.lines,
        input_format=decision.input_format,
        paragraphs=totals.paragraphs,
        cut_paragraphs=totals.cut_paragraphs,
        max_paragraph_bytes=config.max_paragraph_bytes,
        sentences_out=totals.sentences,
        dropped_short=totals.dropped_short,
        dropped_long=totals.dropped_long,
        invalid_bytes=totals.invalid_bytes,
        first_invalid_line=totals.first_invalid_line,
        first_invalid_source=totals.first_invalid_source,
        seconds=time.perf_counter() - start,
    )
    logger.info("cleanup: %s", summary.describe())
    return summary
