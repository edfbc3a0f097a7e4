"""Stage 01's per-chunk work, done in worker processes: units -> filtered, spaced sentences.

A chunk of whole units is decoded and normalised
(:func:`~pretraining_utils.text_units.chunk_units`), split into sentences by Punkt, optionally
lower-cased, its punctuation spaced off the words
(:func:`~pretraining_utils.punctuation.space_punctuation`), and filtered by word count.
"""

from __future__ import annotations

import multiprocessing
import signal
from dataclasses import dataclass
from typing import Any

from pretraining_utils.punctuation import space_punctuation
from pretraining_utils.punkt import SeededPunktTokenizer, build_sentence_splitter
from pretraining_utils.text_units import Chunk, chunk_units

__all__ = ["ChunkResult", "SentenceOptions", "init_worker", "process_chunk"]


@dataclass(frozen=True)
class ChunkResult:
    data: bytes  # the sentences, UTF-8, each followed by "\n"
    nbytes: int
    lines: int
    paragraphs: int
    sentences: int
    dropped_short: int
    dropped_long: int
    invalid_bytes: int
    first_invalid_line: int | None
    cut_line: int | None  # the last line of a paragraph cut at the size limit
    source: str


@dataclass(frozen=True)
class SentenceOptions:
    lowercase: bool
    min_words: int
    max_words: int | None


@dataclass(frozen=True)
class _WorkerState:
    splitter: SeededPunktTokenizer
    options: SentenceOptions


# Set once per worker process by ordered_map's initializer, so the splitter (whose parameters
# may hold hundreds of thousands of words) is built once rather than pickled with every chunk.
_worker_state: _WorkerState | None = None


def init_worker(params: dict[str, Any], options: SentenceOptions) -> None:
    global _worker_state
    if multiprocessing.parent_process() is not None:
        # Ctrl-C reaches the whole process group; let only the parent handle it, so an
        # interrupt gives one clean message instead of a traceback per worker.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_state = _WorkerState(build_sentence_splitter(params), options)


def process_chunk(chunk: Chunk) -> ChunkResult:
    """Decode, normalise, split and space one chunk of units (runs in a worker)."""
    assert _worker_state is not None, "init_worker was not run"
    splitter, options = _worker_state.splitter, _worker_state.options
    units = chunk_units(chunk)
    out: list[str] = []
    short = long = 0
    for paragraph in units.texts:
        for sentence in splitter.tokenize(paragraph):
            if options.lowercase:
                sentence = sentence.lower()
            sentence = space_punctuation(sentence)
            words = sentence.count(" ") + 1
            if words < options.min_words:
                short += 1
            elif options.max_words is not None and words > options.max_words:
                long += 1
            else:
                out.append(sentence)
    text = "".join(s + "\n" for s in out)
    return ChunkResult(
        data=text.encode("utf-8"),
        nbytes=len(chunk.data),
        lines=units.lines,
        paragraphs=len(units.texts),
        sentences=len(out),
        dropped_short=short,
        dropped_long=long,
        invalid_bytes=units.invalid_bytes,
        first_invalid_line=units.first_invalid_line,
        cut_line=chunk.first_line + units.lines - 1 if chunk.cut else None,
        source=chunk.source,
    )
