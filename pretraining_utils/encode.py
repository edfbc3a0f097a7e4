"""Stage 03: encode a sentence-per-line corpus with a SentencePiece model.

Three output formats:

``id`` / ``piece``
    Text, exactly one output line per input line (an empty line gives ``2 3`` with the default
    ``bos:eos``), tokens separated by one space, UTF-8, ``\\n`` line ends: what
    ``spm_encode --extra_options=bos:eos --output_format=id|piece`` prints, the predecessor's
    (tf2qrnn) format. Pieces of unknown text are its surface form, as sentencepiece gives them.
``bin``
    The memory-mappable training corpus of :mod:`pretraining_utils.corpus` (a directory).

The input is streamed in chunks of whole lines (``chunk_bytes``), so memory stays constant.
Chunks are encoded by ``workers`` threads (sentencepiece releases the GIL while it encodes),
turned into output bytes with numpy (no per-token Python work for ``id`` and ``bin``), and
written in input order: the output is byte-identical for any number of workers. Lines are split
on ``\\n`` only; any other character, ``\\r`` included, belongs to the line, as in ``spm_encode``.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import sentencepiece

from pretraining_utils.corpus import BinaryCorpusWriter
from pretraining_utils.parallel import default_workers, ordered_map
from pretraining_utils.streams import line_chunks
from ulmfit_core.artifacts import atomic_dir, atomic_file, library_versions, sha256_file
from ulmfit_core.errors import InputError
from ulmfit_core.ids import SPECIAL_IDS, UNK_ID

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("id", "piece", "bin")
EXTRA_OPTION_NAMES = ("bos", "eos", "reverse")
_MAX_TABLE_VOCAB = 1_000_000
DEFAULT_CHUNK_BYTES = 1 << 16  # small chunks keep both workers busy to the end (measured)


@dataclass(frozen=True)
class ExtraOptions:
    """sentencepiece's encode extra options: ``<s>`` first, ``</s>`` last, pieces reversed."""

    bos: bool = False
    eos: bool = False
    reverse: bool = False

    @classmethod
    def parse(cls, text: str) -> ExtraOptions:
        """Parse ``spm_encode``'s colon-separated syntax, e.g. ``"bos:eos"``; ``""`` is none.

        ``reverse`` reverses the sentence's pieces; it must come before ``bos``/``eos``, where
        ``spm_encode`` would also reverse the markers (``bos:eos:reverse`` puts ``</s>`` first).

        Raises:
            InputError: an unknown or repeated option, or ``reverse`` after ``bos``/``eos``.
        """
        names = [name.strip() for name in text.split(":")] if text.strip() else []
        unknown = [name for name in names if name not in EXTRA_OPTION_NAMES]
        if unknown:
            raise InputError(
                f"unknown extra option(s) {unknown} in {text!r}: use a colon-separated subset "
                f"of {', '.join(EXTRA_OPTION_NAMES)} (e.g. 'bos:eos', 'reverse:bos:eos'), "
                "or '' for none"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise InputError(f"extra option(s) {repeated} repeated in {text!r}")
        if "reverse" in names and any(
            names.index(n) < names.index("reverse") for n in ("bos", "eos") if n in names
        ):
            raise InputError(
                f"extra options {text!r}: put 'reverse' before 'bos'/'eos' "
                "(e.g. 'reverse:bos:eos'); after them it would reverse the <s> and </s> markers too"
            )
        return cls(bos="bos" in names, eos="eos" in names, reverse="reverse" in names)

    def __str__(self) -> str:
        return ":".join(name for name in ("reverse", "bos", "eos") if getattr(self, name))


@dataclass(frozen=True)
class EncodeConfig:
    """What stage 03 encodes.

    Args:
        corpus_path: UTF-8 text, one sentence per line.
        model_path: a SentencePiece ``.model`` from stage 02.
        save_path: the output file (``id``, ``piece``) or directory (``bin``).
        extra_options: ``spm_encode``'s extra options, see :meth:`ExtraOptions.parse`.
        output_format: ``id``, ``piece`` or ``bin``.
        workers: encoding threads; ``None`` uses every core this process may run on.
        chunk_bytes: about how much text each worker encodes at a time (whole lines).
    """

    corpus_path: Path
    model_path: Path
    save_path: Path
    extra_options: str = "bos:eos"
    output_format: str = "id"
    workers: int | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES


@dataclass(frozen=True)
class EncodeSummary:
    save_path: Path
    output_format: str
    lines: int
    tokens: int
    unk: int
    seconds: float

    @property
    def unk_rate(self) -> float:
        return self.unk / self.tokens if self.tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("inf")


def load_processor(model_path: str | os.PathLike) -> sentencepiece.SentencePieceProcessor:
    """Load a SentencePiece model, turning sentencepiece's failures into :class:`InputError`."""
    path = Path(model_path)
    if not path.is_file():
        raise InputError(f"SentencePiece model not found: {path} (build it with 02_build_spm.py)")
    try:
        return sentencepiece.SentencePieceProcessor(model_file=os.fspath(path))
    except (RuntimeError, OSError) as err:
        raise InputError(
            f"cannot load the SentencePiece model {path}: {err} (is it a .model file from "
            "02_build_spm.py?)"
        ) from None


def model_special_ids(processor: sentencepiece.SentencePieceProcessor) -> dict[str, int]:
    """The model's ids for ``<unk>``, ``<pad>``, ``<s>``, ``</s>`` (-1 where it has none)."""
    ids = {}
    for piece in SPECIAL_IDS:
        piece_id = processor.piece_to_id(piece)
        known = piece_id != processor.unk_id() or piece == "<unk>"
        ids[piece] = piece_id if known and processor.id_to_piece(piece_id) == piece else -1
    return ids


# ---- encoding one chunk -------------------------------------------------------------------------


class _Encoder:
    """Turns a chunk of input bytes into output for one format; shared by the worker threads."""

    def __init__(
        self,
        processor: sentencepiece.SentencePieceProcessor,
        options: ExtraOptions,
        output_format: str,
        corpus_path: Path,
    ) -> None:
        self.processor = processor
        self.options = options
        self.output_format = output_format
        self.corpus_path = corpus_path
        self.vocab_size = processor.get_piece_size()
        self._fast = _has_fast_batch(processor)
        self._local = threading.local()  # one single-thread sentencepiece pool per worker
        if output_format == "id":
            self._id_text = _IdTextTable(self.vocab_size)
        if output_format == "piece":
            self._vocab = frozenset(
                processor.id_to_piece(i).encode("utf-8") for i in range(self.vocab_size)
            )

    def __call__(self, chunk: _Chunk) -> _Encoded:
        lines = chunk.data.split(b"\n")
        lines.pop()  # every chunk ends with a newline
        self._check_utf8(chunk)
        if self.output_format == "piece":
            return self._encode_pieces(chunk, lines)
        tokens, lengths = self.encode_flat(lines)
        unk = int(np.count_nonzero(tokens == UNK_ID))
        data: bytes | np.ndarray
        data = tokens if self.output_format == "bin" else self._id_text.format(tokens, lengths)
        return _Encoded(data, lengths, len(lines), len(tokens), unk, len(chunk.data))

    def encode_flat(self, lines: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """All lines' ids concatenated (int32) and the number of ids per line (int64)."""
        opts = self.options
        if not lines:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        if self._fast:
            # The buffers behind encode(..., out_type="numpy"), without one numpy array per line.
            pool = getattr(self._local, "pool", None)
            if pool is None:  # made once per thread, not once per call (~40 us each)
                pool = self._local.pool = sentencepiece.ThreadPool(1)
            buffers = self.processor._processor._EncodeAsBufferBatch(
                lines, 1, pool, False, -1, 0.0, opts.bos, opts.eos, opts.reverse
            )
            views = list(map(memoryview, buffers))
            lengths = np.fromiter(map(len, views), np.int64, count=len(views))
            tokens = np.frombuffer(b"".join(views), np.int32)
        else:
            arrays = self.processor.encode(
                lines,
                out_type="numpy",
                add_bos=opts.bos,
                add_eos=opts.eos,
                reverse=opts.reverse,
                num_threads=1,
            )
            lengths = np.fromiter(map(len, arrays), np.int64, count=len(arrays))
            tokens = np.concatenate(arrays).astype(np.int32, copy=False)
        return tokens, lengths

    def _encode_pieces(self, chunk: _Chunk, lines: list[bytes]) -> _Encoded:
        opts = self.options
        pieces = self.processor.encode(
            lines,
            out_type=bytes,
            add_bos=opts.bos,
            add_eos=opts.eos,
            reverse=opts.reverse,
            num_threads=1,
        )
        text = b"".join([b" ".join(line) + b"\n" for line in pieces])
        vocab = self._vocab
        unk = sum(1 for piece in itertools.chain.from_iterable(pieces) if piece not in vocab)
        lengths = np.fromiter(map(len, pieces), np.int64, count=len(pieces))
        return _Encoded(text, lengths, len(lines), int(lengths.sum()), unk, len(chunk.data))

    def _check_utf8(self, chunk: _Chunk) -> None:
        try:
            chunk.data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = chunk.first_line + chunk.data.count(b"\n", 0, err.start)
            line_start = chunk.data.rfind(b"\n", 0, err.start) + 1
            raise InputError(
                f"{self.corpus_path}: line {line} is not valid UTF-8 ({err.reason} at byte "
                f"{err.start - line_start} of the line); stage 01 writes UTF-8, re-run it or "
                "convert the file"
            ) from None


def _has_fast_batch(processor: sentencepiece.SentencePieceProcessor) -> bool:
    """Whether sentencepiece's internal batch-to-buffers call works as :meth:`encode_flat` uses it.

    It is checked against the public API on a sample, so another sentencepiece version falls
    back to ``encode(..., out_type="numpy")`` instead of giving wrong ids.
    """
    batch = getattr(getattr(processor, "_processor", None), "_EncodeAsBufferBatch", None)
    if batch is None:
        return False
    sample = [b"The quick brown fox.", b"", "Zürich, 1998 \u2014 ok".encode()]
    try:
        got = [
            np.frombuffer(buf, np.int32).tolist()
            for buf in batch(sample, 1, None, False, -1, 0.0, True, True, True)
        ]
    except Exception:  # any failure at all means: use the public API instead
        return False
    expected = processor.encode(sample, add_bos=True, add_eos=True, reverse=True)
    return got == expected


class _IdTextTable:
    """Vectorised ``' '.join(map(str, ids))`` per line, ``'\\n'`` after each line.

    Each id's decimal digits plus a space are packed into one 8-byte word, so formatting a chunk
    is two gathers and a boolean compress instead of a Python loop over tokens.
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        # Up to 7 digits and a space fit a word; past a million ids, the table is not worth it.
        self.vectorised = vocab_size <= _MAX_TABLE_VOCAB
        if not self.vectorised:
            return
        rows = vocab_size + 1  # the last row is an empty line's "token": just its newline
        ids = np.arange(rows, dtype=np.int64)
        self.digits = np.ones(rows, np.int64)
        for power in range(1, 8):
            self.digits += ids >= 10**power
        self.digits[vocab_size] = 0
        text = np.zeros((rows, 8), np.uint8)
        for position in range(7):  # digit `position` (from the left) of every id at once
            exponent = self.digits - 1 - position
            has_digit = exponent >= 0
            digit = ids // 10 ** np.maximum(exponent, 0) % 10
            text[has_digit, position] = ord("0") + digit[has_digit]
        text[ids, self.digits] = ord(" ")
        keep = np.arange(8)[None, :] <= self.digits[:, None]
        self.text = text.view(np.uint64).ravel()
        self.keep = keep.view(np.uint64).ravel()

    def format(self, tokens: np.ndarray, lengths: np.ndarray) -> bytes:
        if not len(lengths):
            return b""
        if not self.vectorised:
            return _format_ids_python(tokens, lengths)
        empty = lengths == 0
        if empty.any():
            starts = np.cumsum(lengths) - lengths
            tokens = np.insert(tokens, starts[empty], self.vocab_size)
            lengths = np.maximum(lengths, 1)
        words = self.text.take(tokens)
        keep = self.keep.take(tokens)
        chars = words.view(np.uint8).reshape(-1, 8)
        last = np.cumsum(lengths) - 1
        chars[last, self.digits.take(tokens[last])] = ord("\n")
        return np.compress(keep.view(bool), chars.ravel()).tobytes()


def _format_ids_python(tokens: np.ndarray, lengths: np.ndarray) -> bytes:
    ids = tokens.tolist()
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    return "".join(
        " ".join(map(str, ids[a:b])) + "\n" for a, b in zip(starts, ends, strict=True)
    ).encode()


# ---- streaming ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    data: bytes  # whole lines, always ending with b"\n"
    first_line: int  # 1-based number of its first line in the corpus


@dataclass(frozen=True)
class _Encoded:
    data: bytes | np.ndarray  # output text, or the tokens for the binary corpus
    lengths: np.ndarray
    lines: int
    tokens: int
    unk: int
    input_bytes: int


def _read_chunks(f: IO[bytes], chunk_bytes: int, digest: Any | None = None) -> Iterator[_Chunk]:
    """Chunks of whole lines, about ``chunk_bytes`` each; a missing last newline is added."""
    for first_line, data in line_chunks(f, chunk_bytes, digest):
        yield _Chunk(data if data.endswith(b"\n") else data + b"\n", first_line)


def encode_corpus(
    config: EncodeConfig, progress: Callable[[int], Any] | None = None
) -> EncodeSummary:
    """Encode ``config.corpus_path`` into ``config.save_path``, atomically.

    Args:
        config: what to encode and how.
        progress: called with the number of input bytes each time a chunk's output is written.

    Raises:
        InputError: a missing or unloadable model, a model without fastai's special ids, bad
            extra options, an empty corpus or one that is not UTF-8. Nothing is written then.
    """
    start = time.perf_counter()
    if config.output_format not in OUTPUT_FORMATS:
        raise InputError(
            f"unknown output format {config.output_format!r}; use one of {OUTPUT_FORMATS}"
        )
    options = ExtraOptions.parse(config.extra_options)
    if config.chunk_bytes < 1:
        raise InputError(f"chunk_bytes must be positive, got {config.chunk_bytes}")
    corpus_path, save_path = Path(config.corpus_path), Path(config.save_path)
    if not corpus_path.exists() or corpus_path.is_dir():
        raise InputError(f"corpus not found: {corpus_path}")
    if corpus_path.is_file() and corpus_path.stat().st_size == 0:  # (a pipe is checked after)
        raise InputError(f"the corpus {corpus_path} is empty: nothing to encode")
    if config.output_format != "bin" and save_path.is_dir():
        raise InputError(
            f"--save-path {save_path} is a directory; "
            f"the {config.output_format} format writes a file"
        )
    if config.output_format == "bin" and save_path.exists() and not save_path.is_dir():
        raise InputError(f"--save-path {save_path} is a file; the bin format writes a directory")

    processor = load_processor(config.model_path)
    special_ids = model_special_ids(processor)
    if special_ids != SPECIAL_IDS:
        raise InputError(
            f"the SentencePiece model {config.model_path} has special ids {special_ids}, but the "
            f"pipeline needs {SPECIAL_IDS} (fastai's); build the model with 02_build_spm.py"
        )
    encoder = _Encoder(processor, options, config.output_format, corpus_path)
    workers = config.workers or default_workers()
    report = progress or (lambda _n: None)
    logger.debug(
        "encoding %s with %s (%s, %d workers)", corpus_path, config.model_path, options, workers
    )

    lines = tokens = unk = 0
    with open(corpus_path, "rb") as source:
        if config.output_format == "bin":
            digest = hashlib.sha256()
            with (
                atomic_dir(save_path) as tmp_dir,
                BinaryCorpusWriter(tmp_dir, encoder.vocab_size) as writer,
            ):
                chunks = _read_chunks(source, config.chunk_bytes, digest)
                for done in ordered_map(encoder, chunks, workers, threads=True):
                    writer.append(done.data, done.lengths)
                    lines, tokens, unk = lines + done.lines, tokens + done.tokens, unk + done.unk
                    report(done.input_bytes)
                _check_not_empty(lines, corpus_path)
                writer.finish(
                    bos=options.bos,
                    eos=options.eos,
                    reverse=options.reverse,
                    extra_options=str(options),
                    unk_count=unk,
                    special_ids=special_ids,
                    spm_model_path=os.fspath(config.model_path),
                    spm_model_sha256=sha256_file(config.model_path),
                    source_path=os.fspath(corpus_path),
                    source_sha256=digest.hexdigest(),
                    versions=library_versions("sentencepiece", "numpy"),
                )
        else:
            with atomic_file(save_path) as tmp, open(tmp, "wb") as out:
                chunks = _read_chunks(source, config.chunk_bytes)
                for done in ordered_map(encoder, chunks, workers, threads=True):
                    out.write(done.data)
                    lines, tokens, unk = lines + done.lines, tokens + done.tokens, unk + done.unk
                    report(done.input_bytes)
                _check_not_empty(lines, corpus_path)
    return EncodeSummary(
        save_path, config.output_format, lines, tokens, unk, time.perf_counter() - start
    )


def _check_not_empty(lines: int, corpus_path: Path) -> None:
    if lines == 0:  # a pipe that gave nothing; an empty file is refused before any work
        raise InputError(f"the corpus {corpus_path} is empty: nothing to encode")
