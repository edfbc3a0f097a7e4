"""Stage 01: raw text -> normalised sentences, one per line.

Each input line is a paragraph. A paragraph is decoded (invalid UTF-8 replaced and counted),
normalised (NFKC, control characters dropped, whitespace collapsed), split into sentences by
nltk's Punkt, optionally lower-cased, and its punctuation is spaced off the words. Sentences
never span input lines.

Punkt is trained here, on the head of the input itself, because nltk's pretrained models are
a download we cannot rely on; a built-in abbreviation list per language
(:mod:`pretraining_utils.punkt_seeds`) fills in what a small sample cannot teach it. The
parameters used are saved beside the output (``<out>.punkt.json``) and can be reused with
``punkt_params`` so that several corpora are split the same way.

The input is streamed in chunks of whole lines, processed by worker processes in input order,
so memory stays constant on inputs of any size and the output does not depend on the number
of workers.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import signal
import sys
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import regex
from nltk.tokenize.punkt import (
    REASON_KNOWN_COLLOCATION,
    PunktParameters,
    PunktSentenceTokenizer,
    PunktToken,
    PunktTrainer,
)

from pretraining_utils.artifacts import atomic_file, library_versions, write_json
from pretraining_utils.errors import InputError
from pretraining_utils.parallel import ordered_map
from pretraining_utils.punkt_seeds import (
    PUNKT_LANGUAGES,
    seed_abbreviations,
    sentence_final_abbreviations,
)
from pretraining_utils.streams import line_chunks

logger = logging.getLogger(__name__)

STDIN = Path("-")
"""The ``input_text`` that means standard input."""

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
        chunk_bytes: the size of the chunks of whole lines sent to the workers.
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
        if self.chunk_bytes < 1 or self.sample_bytes < 0:
            raise InputError("chunk_bytes must be positive and sample_bytes not negative")

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
    paragraphs: int
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
        return (
            f"{self.lines_in:,} lines in ({self.paragraphs:,} non-empty), "
            f"{self.sentences_out:,} sentences out, dropped {self.dropped_short:,} too short "
            f"and {self.dropped_long:,} too long, {invalid}, {self.seconds:.1f} s "
            f"({rate:.1f} MiB/s), wrote {self.out_path}"
        )


# ---------------------------------------------------------------------------------------------
# Pure text functions

# Control (Cc) and format (Cf) characters are dropped: NUL, BOM, soft hyphens, zero-width
# spaces and bidi marks carry no words. Exceptions: the whitespace controls (tab, CR, VT, FF,
# the \x1c-\x1f separators, NEL), which str.split() then turns into single spaces, and the
# zero-width (non-)joiners, which change how Persian, Indic and emoji text reads.
_DROPPED_CHARS = regex.compile(
    r"[[\p{Cc}\p{Cf}]--[\t\n\x0b\x0c\r\x1c-\x1f\x85\u200c\u200d]]", regex.V1
)


def normalize_text(text: str) -> str:
    """NFKC-normalise, drop control/format characters and collapse whitespace to single spaces.

    NFKC folds compatibility forms (ligatures, full-width letters and digits, non-breaking
    spaces, "…" -> "...") so one word is spelled one way in the corpus.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _DROPPED_CHARS.sub("", text)
    return " ".join(text.split())


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
    """Train Punkt on ``paragraphs`` (normalised lines) and add ``lang``'s seed abbreviations.

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
            # Blank lines between paragraphs tell Punkt each line starts a sentence.
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
# Decoding and the per-chunk work done in worker processes

_ESCAPED_BYTE = regex.compile(r"[\udc80-\udcff]")


def decode_utf8(data: bytes) -> tuple[str, int]:
    """Decode UTF-8, replacing invalid bytes with U+FFFD; return the text and how many bytes
    were invalid.

    ``errors="replace"`` puts one U+FFFD per invalid *sequence*, so the bytes are counted with
    ``surrogateescape``, which maps each invalid byte to its own lone surrogate.
    """
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        invalid = len(_ESCAPED_BYTE.findall(data.decode("utf-8", "surrogateescape")))
        return data.decode("utf-8", "replace"), invalid


@dataclass(frozen=True)
class _Chunk:
    """Whole lines of one input source, and the number of the first one (1-based)."""

    source: str
    first_line: int
    data: bytes


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


def _split_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the chunk ended with a newline, not with an empty last line
    return lines


def _process_chunk(chunk: _Chunk) -> _ChunkResult:
    """Decode, normalise, split and space one chunk of lines (runs in a worker)."""
    assert _worker_state is not None, "_init_worker was not run"
    splitter, options = _worker_state.splitter, _worker_state.options
    lines = _split_lines(chunk.data)
    invalid = 0
    first_invalid: int | None = None
    out: list[str] = []
    paragraphs = short = long = 0
    for number, raw in enumerate(lines, start=chunk.first_line):
        line, bad = decode_utf8(raw)
        if bad:
            invalid += bad
            if first_invalid is None:
                first_invalid = number
        paragraph = normalize_text(line)
        if not paragraph:
            continue
        paragraphs += 1
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
        lines=len(lines),
        paragraphs=paragraphs,
        sentences=len(out),
        dropped_short=short,
        dropped_long=long,
        invalid_bytes=invalid,
        first_invalid_line=first_invalid,
        source=chunk.source,
    )


# ---------------------------------------------------------------------------------------------
# Reading the input


def input_files(input_text: Path) -> list[Path]:
    """The files ``input_text`` names: itself, a directory's ``*.txt`` files (recursively,
    sorted) or ``[STDIN]``. InputError if there is nothing to read."""
    input_text = Path(input_text)
    if input_text == STDIN:
        return [STDIN]
    if not input_text.exists():
        raise InputError(
            f"input {input_text} does not exist; pass a text file, a directory of .txt files "
            "or - for standard input"
        )
    if input_text.is_dir():
        files = sorted(p for p in input_text.rglob("*.txt") if p.is_file())
        if not files:
            raise InputError(
                f"input directory {input_text} contains no .txt files; put the corpus in "
                "*.txt files there or pass a file"
            )
        return files
    return [input_text]


def input_size(input_text: Path) -> int | None:
    """Total bytes of the input, or None for standard input (for progress bars)."""
    files = input_files(input_text)
    if files == [STDIN]:
        return None
    return sum(f.stat().st_size for f in files)


def _chunks_of(stream: BinaryIO, source: str, chunk_bytes: int) -> Iterator[_Chunk]:
    """Cut a byte stream into chunks of about ``chunk_bytes`` that end at line ends."""
    for first_line, data in line_chunks(stream, chunk_bytes):
        yield _Chunk(source, first_line, data)


def _read_chunks(files: list[Path], chunk_bytes: int) -> Iterator[_Chunk]:
    """Chunks of every input file in turn; a chunk never spans two files."""
    for path in files:
        if path == STDIN:
            yield from _chunks_of(sys.stdin.buffer, "<stdin>", chunk_bytes)
        else:
            with open(path, "rb") as stream:
                yield from _chunks_of(stream, str(path), chunk_bytes)


def _take_head(chunks: Iterator[_Chunk], sample_bytes: int) -> tuple[list[_Chunk], bool]:
    """Read whole chunks off ``chunks`` until ``sample_bytes`` are in hand.

    Returns them and whether they are the whole input. The head is kept in memory so that
    stdin, which cannot be read twice, is still processed in full.
    """
    head: list[_Chunk] = []
    size = 0
    for chunk in chunks:
        head.append(chunk)
        size += len(chunk.data)
        if size >= sample_bytes:
            return head, False
    return head, True


def _paragraphs(chunks: Iterable[_Chunk]) -> Iterator[str]:
    for chunk in chunks:
        for raw in _split_lines(chunk.data):
            paragraph = normalize_text(decode_utf8(raw)[0])
            if paragraph:
                yield paragraph


def _describe_input(input_text: Path) -> str:
    return "standard input" if Path(input_text) == STDIN else str(input_text)


def _empty_input_error(input_text: Path) -> InputError:
    return InputError(
        f"{_describe_input(input_text)} contains no text (only whitespace or nothing at all); "
        "point --input-text at the raw corpus: one paragraph per line, UTF-8"
    )


def _train_on_head(
    chunks: Iterator[_Chunk], config: CleanupConfig
) -> tuple[dict[str, Any], list[_Chunk]]:
    """Train Punkt on the first ``config.sample_bytes`` of ``chunks``; return the params and
    the chunks consumed, which the caller must still process (stdin cannot be read twice)."""
    head, whole_input = _take_head(chunks, config.sample_bytes)
    sample = list(_paragraphs(head))
    if whole_input and not sample:
        raise _empty_input_error(config.input_text)  # before any worker or file is made
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

    chunks: Iterator[_Chunk] = _read_chunks(files, config.chunk_bytes)
    if config.punkt_params is not None:
        # Nothing is read ahead: the output starts at once, even on a slow pipe.
        params = load_punkt_params(config.punkt_params, config.lang)
        logger.info("using Punkt parameters from %s", config.punkt_params)
    else:
        params, head = _train_on_head(chunks, config)
        chunks = itertools.chain(head, chunks)

    options = _Options(config.lowercase, config.min_words, config.max_words)
    totals = _Totals()
    with atomic_file(out_path) as tmp, open(tmp, "wb") as out:
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
        paragraphs=totals.paragraphs,
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
