"""Stage 01: raw text -> normalised sentences, one per line.

The input is read as units: each line (``lines``), or lines joined up to a blank line
(``paragraphs``, for hard-wrapped text), or whichever of the two a sample of the input looks
like (``auto``); see :mod:`pretraining_utils.text_units`. A unit is decoded (invalid UTF-8
replaced and counted), normalised (NFKC, control characters dropped, whitespace collapsed),
split into sentences by nltk's Punkt, optionally lower-cased, and its punctuation is spaced off
the words. Sentences never span units.

Punkt is trained here, on the head of the input itself, because nltk's pretrained models are
a download we cannot rely on; a built-in abbreviation list per language
(:mod:`pretraining_utils.punkt_seeds`) fills in what a small sample cannot teach it. The
parameters used are saved beside the output (``<out>.punkt.json``) and can be reused with
``punkt_params`` so that several corpora are split the same way.

The input is streamed in chunks of whole units, processed by worker processes in input order,
so memory stays constant on inputs of any size and the output does not depend on the number
of workers.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex
from nltk.tokenize.punkt import (
    REASON_KNOWN_COLLOCATION,
    PunktParameters,
    PunktSentenceTokenizer,
    PunktToken,
    PunktTrainer,
)

from pretraining_utils.parallel import ordered_map
from pretraining_utils.punkt_seeds import (
    PUNKT_LANGUAGES,
    seed_abbreviations,
    sentence_final_abbreviations,
)
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
from ulmfit_core.artifacts import atomic_file, library_versions, write_json
from ulmfit_core.errors import InputError

logger = logging.getLogger(__name__)

PARAMS_FORMAT = "punkt-params"
PARAMS_FORMAT_VERSION = 1
PARAMS_SUFFIX = ".punkt.json"

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
# Pure text functions

# A "word character" is anything that is neither whitespace nor punctuation (P*) nor a symbol
# (S*): letters, digits, combining marks, plus "_" so identifiers (sys.version_info, __init__)
# stay whole. Punctuation joins two word characters only in the cases below; everywhere else
# each punctuation mark or symbol becomes a token of its own.
_W = r"(?:[^\s\p{P}\p{S}]|_)"
_PUNCT_TOKENS = regex.compile(
    rf"""
      \.{{2,}}                        # an ellipsis stays one token ("..." after NFKC of "…")
    | {_W}+
      (?:
        (?: (?<=\d)[.,:](?=\d)        # 3.14  1,000  12:30  12.03.2020
          | \.(?={_W})                # inner periods: e.g  m.in  U.S  example.com
          | [-\u2010](?={_W})         # hyphens: well-known  COVID-19
          | (?<=\p{{L}})['\u2019](?=\p{{L}})  # apostrophes: don't  it's  O'Neil  don’t
        )
        {_W}+
      )*
      (?:\.(?=\s))?                   # a period inside the sentence: Punkt saw an abbreviation
    | \S                              # any other punctuation mark or symbol, alone
    """,
    regex.VERBOSE,
)


def space_punctuation(sentence: str) -> str:
    """Separate punctuation and symbols from words by single spaces.

    ``sentence`` is one sentence as Punkt returned it, so a period followed by more text is
    one Punkt took for an abbreviation, an initial or an ordinal ("Dr. Smith", "np. to",
    "J. R. R. Tolkien", "5. miejsce"): it stays on its word. The sentence-final period, like
    every other mark, becomes its own token ("end." -> "end ."). Numbers, hyphenated words and
    apostrophes inside words stay whole; a run of periods stays one token ("wait ... what").
    """
    return " ".join(_PUNCT_TOKENS.findall(sentence))


# ---------------------------------------------------------------------------------------------
# Punkt: training, (de)serialising, the sentence splitter


# Quotes and brackets that may close a sentence after its "?" or "!" (German closes with “).
_CLOSERS = "\"')]}\u00bb\u203a\u2019\u201d\u201c\u2018"


class SeededPunktTokenizer(PunktSentenceTokenizer):
    """Punkt with three extra rules, for seeded abbreviations and for "?"/"!" inside quotes.

    - An abbreviation in ``final_abbrevs`` ("etc.", "itd.") followed by a capitalised word ends
      the sentence: such abbreviations close lists, and without a large sample Punkt has no
      orthographic evidence to split after them.
    - A single-letter abbreviation in the abbreviation list ("r." = rok, "w." = wiek) is judged
      like longer abbreviations (orthographic and sentence-starter evidence may end the
      sentence), where plain Punkt treats every single letter as a name initial and never
      splits after one it knows as an abbreviation.
    - A "sentence" that starts with a lower-case letter right after one ending in "?" or "!"
      (and closing quotes or brackets) continues it: ``"Why?" she asked.`` is one sentence.
      Punkt always breaks after "?" and "!".

    The first two hook into ``_second_pass_annotation``, a private method of nltk 3.10's Punkt;
    the tests in ``tests/fastai/test_cleanup.py`` pin the behaviour.
    """

    def __init__(self, params: PunktParameters, final_abbrevs: Iterable[str] = ()) -> None:
        super().__init__()
        self._params = params
        self._final_abbrevs = frozenset(final_abbrevs)

    def span_tokenize(
        self, text: str, realign_boundaries: bool = True
    ) -> Iterator[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for start, end in super().span_tokenize(text, realign_boundaries):
            if (
                spans
                and text[start].islower()
                and text[spans[-1][0] : spans[-1][1]].rstrip(_CLOSERS).endswith(("?", "!"))
            ):
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        return iter(spans)

    def _second_pass_annotation(
        self, aug_tok1: PunktToken, aug_tok2: PunktToken | None
    ) -> str | None:
        reason = super()._second_pass_annotation(aug_tok1, aug_tok2)
        if (
            aug_tok2 is None
            or not aug_tok1.abbr
            or aug_tok1.sentbreak
            or reason == REASON_KNOWN_COLLOCATION
        ):
            return reason
        typ = aug_tok1.type_no_period
        if typ not in self._params.abbrev_types:
            return reason  # an initial or ordinal Punkt itself judged; leave it alone
        if typ in self._final_abbrevs and aug_tok2.first_upper:
            aug_tok1.sentbreak = True
            return "sentence-final abbreviation + capitalised word"
        if aug_tok1.is_initial and (
            self._ortho_heuristic(aug_tok2) is True
            or (aug_tok2.first_upper and aug_tok2.type_no_sentperiod in self._params.sent_starters)
        ):
            aug_tok1.sentbreak = True
            return "one-letter abbreviation + orthographic or sentence-starter evidence"
        return reason


def train_punkt(paragraphs: Iterable[str], lang: str, batch_chars: int = MIB) -> dict[str, Any]:
    """Train Punkt on ``paragraphs`` (normalised units, as they will be split) and add
    ``lang``'s seed abbreviations.

    Returns the parameters as a plain, JSON-ready dict (see :func:`build_sentence_splitter`).
    Training runs in batches of about ``batch_chars`` characters so memory stays bounded.
    """
    if lang not in PUNKT_LANGUAGES:
        raise InputError(f"unknown language {lang!r}; Punkt supports: {', '.join(PUNKT_LANGUAGES)}")
    trainer = PunktTrainer()
    batch: list[str] = []
    size = trained = 0
    for paragraph in paragraphs:
        if not paragraph:
            continue
        batch.append(paragraph)
        size += len(paragraph) + 2
        if size >= batch_chars:
            # Blank lines between paragraphs tell Punkt each unit starts a sentence.
            trainer.train("\n\n".join(batch), finalize=False)
            trained += size
            batch, size = [], 0
    if batch:
        trainer.train("\n\n".join(batch), finalize=False)
        trained += size
    params = trainer.get_params()
    learned = len(params.abbrev_types)
    seeds = seed_abbreviations(lang)
    logger.debug(
        "Punkt learned %d abbreviations from %d characters; adding %d built-in ones for %s",
        learned,
        trained,
        len(seeds - params.abbrev_types),
        lang,
    )
    params.abbrev_types |= seeds
    return params_to_dict(params, lang, sentence_final_abbreviations(lang), trained_chars=trained)


def params_to_dict(
    params: PunktParameters,
    lang: str,
    final_abbrevs: Iterable[str] = (),
    trained_chars: int = 0,
) -> dict[str, Any]:
    """Punkt parameters as a plain dict with sorted lists: JSON-ready and deterministic."""
    return {
        "format": PARAMS_FORMAT,
        "format_version": PARAMS_FORMAT_VERSION,
        "lang": lang,
        "versions": library_versions("nltk"),
        "trained_chars": trained_chars,
        "abbrev_types": sorted(params.abbrev_types),
        "sentence_final_abbrev_types": sorted(final_abbrevs),
        "collocations": sorted([a, b] for a, b in params.collocations),
        "sent_starters": sorted(params.sent_starters),
        "ortho_context": {typ: params.ortho_context[typ] for typ in sorted(params.ortho_context)},
    }


def _str_list(data: Mapping[str, Any], key: str) -> list[str]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key!r} must be a list of strings")
    return value


def _check_params(data: Any) -> None:
    """Raise ValueError unless ``data`` is a params dict of the current format."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("format") != PARAMS_FORMAT or data.get("format_version") != PARAMS_FORMAT_VERSION:
        raise ValueError(
            f"format is {data.get('format')!r} version {data.get('format_version')!r}, "
            f"expected {PARAMS_FORMAT!r} version {PARAMS_FORMAT_VERSION}"
        )
    if data.get("lang") not in PUNKT_LANGUAGES:
        raise ValueError(f"unknown lang {data.get('lang')!r}")
    for key in ("abbrev_types", "sentence_final_abbrev_types", "sent_starters"):
        _str_list(data, key)
    collocations = data["collocations"]
    if not isinstance(collocations, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(w, str) for w in pair)
        for pair in collocations
    ):
        raise ValueError("'collocations' must be a list of [word, word] pairs")
    ortho = data["ortho_context"]
    if not isinstance(ortho, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in ortho.values()
    ):
        raise ValueError("'ortho_context' must map words to integers")


def load_punkt_params(path: Path, lang: str) -> dict[str, Any]:
    """Read a ``.punkt.json`` written by an earlier run; InputError if unusable.

    ``lang`` must match the language the parameters were made for: the seeds in them are
    that language's.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read Punkt parameters from {path}: {err}") from None
    try:
        _check_params(data)
    except (KeyError, ValueError) as err:
        raise InputError(
            f"{path} is not a Punkt parameters file written by 01_cleanup ({err}); "
            "run without --punkt-params to train new ones"
        ) from None
    if data["lang"] != lang:
        raise InputError(
            f"{path} holds Punkt parameters for {data['lang']}, but the language is {lang}; "
            f"pass --lang {data['lang']} or train new parameters"
        )
    return data


def build_sentence_splitter(params: Mapping[str, Any]) -> SeededPunktTokenizer:
    """A sentence splitter (``.tokenize(text) -> list[str]``) from a params dict."""
    punkt = PunktParameters()
    punkt.abbrev_types = set(params["abbrev_types"])
    punkt.collocations = {(a, b) for a, b in params["collocations"]}
    punkt.sent_starters = set(params["sent_starters"])
    punkt.ortho_context = defaultdict(int, params["ortho_context"])
    return SeededPunktTokenizer(punkt, params["sentence_final_abbrev_types"])


# ---------------------------------------------------------------------------------------------
# The per-chunk work done in worker processes


@dataclass(frozen=True)
class _ChunkResult:
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
class _Options:
    lowercase: bool
    min_words: int
    max_words: int | None


@dataclass(frozen=True)
class _WorkerState:
    splitter: SeededPunktTokenizer
    options: _Options


# Set once per worker process by ordered_map's initializer, so the splitter (whose parameters
# may hold hundreds of thousands of words) is built once rather than pickled with every chunk.
_worker_state: _WorkerState | None = None


def _init_worker(params: dict[str, Any], options: _Options) -> None:
    global _worker_state
    if multiprocessing.parent_process() is not None:
        # Ctrl-C reaches the whole process group; let only the parent handle it, so an
        # interrupt gives one clean message instead of a traceback per worker.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_state = _WorkerState(build_sentence_splitter(params), options)


def _process_chunk(chunk: Chunk) -> _ChunkResult:
    """Decode, normalise, split and space one chunk of units (runs in a worker)."""
    assert _worker_state is not None, "_init_worker was not run"
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
    return _ChunkResult(
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

    def add(self, result: _ChunkResult) -> None:
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

    options = _Options(config.lowercase, config.min_words, config.max_words)
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
            _process_chunk,
            chunks,
            config.workers,
            initializer=_init_worker,
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
