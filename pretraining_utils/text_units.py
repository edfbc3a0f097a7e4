"""Reading stage 01's input: files -> chunks of whole units -> decoded, normalised units.

A unit is what Punkt splits into sentences; sentences never span two. ``lines``: every line
is a unit (one paragraph or sentence per line: Wikipedia dumps, our own sentence files).
``paragraphs``: hard-wrapped text (books, e-mail archives, man pages, RST and Markdown
sources) wraps a sentence over several lines and separates paragraphs with blank lines, so
lines are joined with one space up to a blank line. ``auto`` picks one of the two from the
head of the input (:func:`decide_input_format`) and says why.

The input is streamed in chunks that end where a unit ends, so a worker can process a chunk
alone, and chunk boundaries never change the units.
"""

from __future__ import annotations

import itertools
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import regex

from pretraining_utils.streams import line_chunks
from ulmfit_core.errors import InputError

STDIN = Path("-")
"""The ``input_text`` that means standard input."""

LINES = "lines"
PARAGRAPHS = "paragraphs"
AUTO = "auto"
INPUT_FORMATS = (LINES, PARAGRAPHS, AUTO)

MAX_PARAGRAPH_BYTES = 1 << 20
"""A paragraph with no blank line for this many bytes is cut at the next line end: memory stays
bounded on text without blank lines, and Punkt never gets a megabyte-long unit."""

# What auto reads: the head of the input, at most this many non-blank lines of it.
AUTO_SAMPLE_BYTES = 256 << 10
AUTO_SAMPLE_LINES = 2000
# Below this many non-blank lines there is too little to tell, and lines (the behaviour before
# formats existed) is the safe guess: a few sentences cut at a wrap at most.
AUTO_MIN_LINES = 10
# Hard-wrapped prose runs on mid-sentence into the next line on most lines (all but about the
# last of each paragraph); one-paragraph-per-line text does so only after headings and titles.
AUTO_MIN_RUN_ON_SHARE = 0.5
# Wrapped lines are short (60-80 characters); a sample with more than a few very long lines
# is one paragraph per line, even where its short titles run on into the text below them.
AUTO_LONG_LINE_CHARS = 200
AUTO_MAX_LONG_LINE_SHARE = 0.1


# ---------------------------------------------------------------------------------------------
# Decoding and normalising one line

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


# ---------------------------------------------------------------------------------------------
# Files -> chunks


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


@dataclass(frozen=True)
class Chunk:
    """Whole units of one input source, and the number of its first line (1-based).

    Args:
        join_lines: the units are paragraphs (lines joined up to a blank line), not lines.
        cut: the chunk ends where a paragraph over the size limit was cut.
    """

    source: str
    first_line: int
    data: bytes
    join_lines: bool = False
    cut: bool = False


def _chunks_of(stream: BinaryIO, source: str, chunk_bytes: int) -> Iterator[Chunk]:
    for first_line, data in line_chunks(stream, chunk_bytes):
        yield Chunk(source, first_line, data)


def read_chunks(files: list[Path], chunk_bytes: int) -> Iterator[Chunk]:
    """Chunks of whole lines, about ``chunk_bytes`` each, of every file in turn; a chunk
    never spans two files."""
    for path in files:
        if path == STDIN:
            yield from _chunks_of(sys.stdin.buffer, "<stdin>", chunk_bytes)
        else:
            with open(path, "rb") as stream:
                yield from _chunks_of(stream, str(path), chunk_bytes)


def take_head(chunks: Iterator[Chunk], sample_bytes: int) -> tuple[list[Chunk], bool]:
    """Read whole chunks off ``chunks`` until ``sample_bytes`` are in hand.

    Returns them and whether they are the whole input. The head is kept in memory so that
    stdin, which cannot be read twice, is still processed in full.
    """
    head: list[Chunk] = []
    size = 0
    for chunk in chunks:
        head.append(chunk)
        size += len(chunk.data)
        if size >= sample_bytes:
            return head, False
    return head, True


def split_lines(data: bytes) -> list[bytes]:
    """The lines of a chunk, without their ``\\n``."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the chunk ended with a newline, not with an empty last line
    return lines


def paragraph_chunks(
    chunks: Iterable[Chunk], chunk_bytes: int, max_paragraph_bytes: int = MAX_PARAGRAPH_BYTES
) -> Iterator[Chunk]:
    """Regroup chunks of whole lines into chunks of whole paragraphs, file by file.

    A chunk ends after a blank line (whitespace only) once it holds ``chunk_bytes``. A
    paragraph reaching ``max_paragraph_bytes`` is cut after the line that reached it when
    another non-blank line follows (a ``cut`` chunk). Cuts depend on the paragraph alone,
    never on ``chunk_bytes``; memory stays below ``chunk_bytes + max_paragraph_bytes`` and a
    line.
    """
    for source, group in itertools.groupby(chunks, key=lambda chunk: chunk.source):
        yield from _regroup(source, group, chunk_bytes, max_paragraph_bytes)


def _regroup(
    source: str, chunks: Iterable[Chunk], chunk_bytes: int, max_paragraph_bytes: int
) -> Iterator[Chunk]:
    parts: list[bytes] = []  # lines read but not yet yielded, from earlier chunks
    held = 0  # bytes in parts
    block_first: int | None = None  # number of the first line not yet yielded
    paragraph = 0  # bytes of the paragraph still open
    full = False  # the open paragraph has reached max_paragraph_bytes
    for chunk in chunks:
        data, line_no, start, pos = chunk.data, chunk.first_line, 0, 0
        if block_first is None:
            block_first = line_no
        while pos < len(data):
            newline = data.find(b"\n", pos)
            end = len(data) if newline < 0 else newline + 1
            if data[pos:end].isspace():
                paragraph, full = 0, False
                if held + end - start >= chunk_bytes:
                    block = b"".join([*parts, data[start:end]])
                    yield Chunk(source, block_first, block, join_lines=True)
                    parts, held, start, block_first = [], 0, end, line_no + 1
            else:
                if full:
                    # The paragraph goes on past the limit: end the chunk before this line.
                    block = b"".join([*parts, data[start:pos]])
                    yield Chunk(source, block_first, block, join_lines=True, cut=True)
                    parts, held, start, block_first = [], 0, pos, line_no
                    paragraph = 0
                paragraph += end - pos
                full = paragraph >= max_paragraph_bytes
            line_no += 1
            pos = end
        if start < len(data):
            parts.append(data[start:])
            held += len(data) - start
    if parts:
        yield Chunk(source, block_first or 1, b"".join(parts), join_lines=True)


# ---------------------------------------------------------------------------------------------
# Chunks -> units


def join_paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Join runs of non-empty normalised lines with one space; an empty line ends a paragraph.

    A hyphen at a line end stays as it is ("infor- mation"): undoing hyphenation needs a
    dictionary, and a wrong join is worse than a visible split.
    """
    run: list[str] = []
    for line in lines:
        if line:
            run.append(line)
        elif run:
            yield " ".join(run)
            run = []
    if run:
        yield " ".join(run)


@dataclass(frozen=True)
class Units:
    """A chunk's units (normalised, non-empty) and what decoding its lines found."""

    texts: list[str]
    lines: int
    invalid_bytes: int
    first_invalid_line: int | None


def chunk_units(chunk: Chunk) -> Units:
    """Decode and normalise a chunk's lines into its units: what Punkt trains on and splits."""
    lines = split_lines(chunk.data)
    invalid = 0
    first_invalid: int | None = None
    texts: list[str] = []
    for number, raw in enumerate(lines, start=chunk.first_line):
        line, bad = decode_utf8(raw)
        if bad:
            invalid += bad
            if first_invalid is None:
                first_invalid = number
        texts.append(normalize_text(line))
    # A line that normalises to nothing (spaces, a BOM, zero-width characters) is blank.
    units = list(join_paragraphs(texts)) if chunk.join_lines else [t for t in texts if t]
    return Units(units, len(lines), invalid, first_invalid)


# ---------------------------------------------------------------------------------------------
# auto: lines or paragraphs?

# A sentence ends in ".", "!", "?" (or a CJK or double one), maybe followed by closing quotes,
# brackets or Markdown emphasis: `end.`  `"Why?"`  `(see above.)`  `„tak.”`  `**done.**`
_SENTENCE_END = regex.compile(
    r"[.!?\u3002\uff01\uff1f\u203c\u2047-\u2049][\p{Pe}\p{Pf}\p{Pi}\"'*_]*$"
)


def ends_sentence(line: str) -> bool:
    """Whether a normalised line ends with sentence-final punctuation."""
    return _SENTENCE_END.search(line) is not None


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "0%"


@dataclass(frozen=True)
class FormatDecision:
    """The input format used and, when ``auto`` chose it, the figures it chose from.

    Args:
        input_format: ``lines`` or ``paragraphs``.
        auto: decided from a sample; False when the format was given.
        sampled_lines: non-blank lines in the sample.
        run_on_lines: of those, lines whose sentence goes on in the next line: it has no
            sentence-final punctuation, or the next line starts in lower case.
        blank_breaks: runs of blank lines between two non-blank lines.
        long_lines: lines longer than :data:`AUTO_LONG_LINE_CHARS` characters.
    """

    input_format: str
    auto: bool = False
    sampled_lines: int = 0
    run_on_lines: int = 0
    blank_breaks: int = 0
    long_lines: int = 0

    def describe(self) -> str:
        """The line logged once the format is settled: the choice, why, how to override."""
        if not self.auto:
            return f"input format: {self.input_format} (as given)"
        n = self.sampled_lines
        why = (
            f"{_percent(self.run_on_lines, n)} of {n:,} sampled lines end mid-sentence, "
            f"running on into the next line, {self.blank_breaks:,} blank-line breaks"
        )
        if n < AUTO_MIN_LINES:
            why = f"only {n:,} non-blank lines sampled, too few to tell: {why}"
        elif self.input_format == LINES and self.run_on_lines >= AUTO_MIN_RUN_ON_SHARE * n:
            if self.blank_breaks == 0:
                why += ", so no blank line shows where a paragraph ends"
            else:
                why += (
                    f", but {_percent(self.long_lines, n)} of the lines are longer than "
                    f"{AUTO_LONG_LINE_CHARS} characters, which wrapped text is not"
                )
        other = PARAGRAPHS if self.input_format == LINES else LINES
        return f"input format: {self.input_format} ({why}); pass --input-format {other} to override"


def decide_input_format(lines: Iterable[str]) -> FormatDecision:
    """Decide ``lines`` or ``paragraphs`` from the head of the input.

    ``lines`` are normalised input lines in order, ``""`` for a blank one; at most
    :data:`AUTO_SAMPLE_LINES` non-blank ones are read. The input is hard-wrapped
    (``paragraphs``) when at least :data:`AUTO_MIN_LINES` lines were sampled, at least half of
    them end mid-sentence (no sentence-final punctuation, or the next line starts in lower
    case) and run on into the next line, blank lines separate the blocks, and hardly any line
    is longer than wrapped lines are.
    """
    sampled = run_on = breaks = long = 0
    open_end = False  # the last non-blank line ended mid-sentence
    after_blank = False  # a blank line came after the last non-blank line
    for line in lines:
        if not line:
            after_blank = True
            continue
        if sampled and after_blank:
            breaks += 1
        elif open_end or line[0].islower():
            # A lower-case start continues the sentence above, even after a period: that
            # period belonged to an abbreviation at the wrap ("e.g.", "np.").
            run_on += 1
        if sampled == AUTO_SAMPLE_LINES:
            break  # this line only told whether the last sampled one runs on
        sampled += 1
        long += len(line) > AUTO_LONG_LINE_CHARS
        open_end = not ends_sentence(line)
        after_blank = False
    hard_wrapped = (
        sampled >= AUTO_MIN_LINES
        and run_on >= AUTO_MIN_RUN_ON_SHARE * sampled
        and breaks > 0
        and long <= AUTO_MAX_LONG_LINE_SHARE * sampled
    )
    return FormatDecision(
        input_format=PARAGRAPHS if hard_wrapped else LINES,
        auto=True,
        sampled_lines=sampled,
        run_on_lines=run_on,
        blank_breaks=breaks,
        long_lines=long,
    )


def resolve_format(
    chunks: Iterator[Chunk], input_format: str
) -> tuple[FormatDecision, Iterator[Chunk]]:
    """Settle ``input_format``; for auto, from the head of ``chunks`` (chunks of lines).

    Returns the decision and the chunks, with any head read put back in front.
    """
    if input_format != AUTO:
        return FormatDecision(input_format), chunks
    head, _ = take_head(chunks, AUTO_SAMPLE_BYTES)
    sample = (normalize_text(decode_utf8(raw)[0]) for c in head for raw in split_lines(c.data))
    return decide_input_format(sample), itertools.chain(head, chunks)


def format_size(nbytes: int) -> str:
    """``1 MiB``, ``64 KiB`` or ``1,000 bytes``: a size limit as a person would write it."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size and nbytes % size == 0:
            return f"{nbytes // size:,} {unit}"
    return f"{nbytes:,} bytes"
