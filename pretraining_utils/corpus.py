"""The binary training corpus: a flat, memory-mappable token stream plus line offsets.

Stage 03 writes it (``03_encode_spm.py --output-format bin --save-path DIR``); stage 04 and the
tests read it with :class:`BinaryCorpus`. ``DIR`` holds three files:

``tokens.bin``
    Every line's token ids, concatenated in corpus order with nothing between lines: raw
    little-endian integers, ``uint16`` when the vocabulary has at most 65,536 pieces, else
    ``int32`` (see :func:`token_dtype`). With the default ``bos:eos`` options each line is
    ``<s>`` (2) … ``</s>`` (3), so the stream reads ``2 … 3 2 … 3``.
``offsets.bin``
    ``num_lines + 1`` raw little-endian ``int64``: ``offsets[0] == 0``,
    ``offsets[-1] == num_tokens``, and line ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.
    Empty input lines are kept (as ``<s> </s>``, or as zero tokens without extra options), so
    line ``i`` of the binary corpus is line ``i`` of the text corpus.
``meta.json``
    Written last; its presence marks a complete corpus (it is what ``make`` targets)::

        {"format": "ulmfit-corpus", "version": 1, "dtype": "uint16" | "int32",
         "vocab_size": int, "num_lines": int, "num_tokens": int,
         "bos": bool, "eos": bool, "reverse": bool, "extra_options": "bos:eos",
         "unk_count": int, "special_ids": {"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3},
         "spm_model_path": str, "spm_model_sha256": str,
         "source_path": str, "source_sha256": str, "versions": {...}}

Reading it back needs only numpy: ``np.memmap(DIR / "tokens.bin", dtype=meta["dtype"], mode="r")``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit_core.errors import InputError

FORMAT_NAME = "ulmfit-corpus"
FORMAT_VERSION = 1
TOKENS_FILE = "tokens.bin"
OFFSETS_FILE = "offsets.bin"
META_FILE = "meta.json"
OFFSET_DTYPE = np.dtype("<i8")
_UINT16_MAX_VOCAB = 1 << 16
_REQUIRED_META = ("format", "version", "dtype", "vocab_size", "num_lines", "num_tokens")
_HOW_TO_MAKE = "run 03_encode_spm.py --output-format bin"


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian ``uint16`` when every id fits (vocab_size <= 65536), else ``int32``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= _UINT16_MAX_VOCAB else np.dtype("<i4")


def _dtype_name(dtype: np.dtype) -> str:
    return {"<u2": "uint16", "<i4": "int32"}[np.dtype(dtype).newbyteorder("<").str]


class BinaryCorpusWriter:
    """Append encoded lines to ``tokens.bin`` / ``offsets.bin`` in ``directory``, streaming.

    Only a running total is kept in memory. :meth:`finish` writes ``meta.json`` last. Make
    ``directory`` with :func:`ulmfit_core.artifacts.atomic_dir` so that a failed run
    leaves nothing behind.
    """

    def __init__(self, directory: str | os.PathLike, vocab_size: int) -> None:
        self.directory = Path(directory)
        self.vocab_size = vocab_size
        self.dtype = token_dtype(vocab_size)
        self.num_lines = 0
        self.num_tokens = 0
        self._tokens = open(self.directory / TOKENS_FILE, "wb")  # noqa: SIM115 - closed in close()
        self._offsets = open(self.directory / OFFSETS_FILE, "wb")  # noqa: SIM115
        self._offsets.write(np.zeros(1, OFFSET_DTYPE).tobytes())

    def append(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append ``len(lengths)`` lines whose tokens, concatenated, are ``tokens``."""
        lengths = np.asarray(lengths, dtype=OFFSET_DTYPE)
        if int(lengths.sum()) != len(tokens):
            raise ValueError(
                f"line lengths sum to {int(lengths.sum())}, but got {len(tokens)} tokens"
            )
        if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token ids outside [0, {self.vocab_size})")
        self._tokens.write(np.asarray(tokens).astype(self.dtype, copy=False).tobytes())
        offsets = np.cumsum(lengths, dtype=OFFSET_DTYPE)
        offsets += self.num_tokens
        self._offsets.write(offsets.tobytes())
        self.num_lines += len(lengths)
        self.num_tokens += len(tokens)

    def finish(self, **meta: Any) -> dict[str, Any]:
        """Close the data files and write ``meta.json`` (the counts plus ``meta``); return it."""
        self.close()
        full_meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "dtype": _dtype_name(self.dtype),
            "vocab_size": self.vocab_size,
            "num_lines": self.num_lines,
            "num_tokens": self.num_tokens,
            **meta,
        }
        path = self.directory / META_FILE
        path.write_text(json.dumps(full_meta, indent=2) + "\n", encoding="utf-8")
        return full_meta

    def close(self) -> None:
        self._tokens.close()
        self._offsets.close()

    def __enter__(self) -> BinaryCorpusWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BinaryCorpus:
    """A binary corpus opened read-only: ``tokens`` and ``offsets`` are memory maps.

    Use :meth:`open`; the file sizes are checked against ``meta.json``.
    """

    def __init__(self, path: Path, meta: dict[str, Any], tokens: np.ndarray, offsets: np.ndarray):
        self.path = path
        self.meta = meta
        self.tokens = tokens
        self.offsets = offsets

    @classmethod
    def open(cls, path: str | os.PathLike) -> BinaryCorpus:
        """Open the corpus directory ``path`` written by stage 03.

        Raises:
            InputError: ``path`` is not a complete binary corpus (missing files, sizes that do
                not match ``meta.json``, unknown format or version).
        """
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise InputError(
                f"not a binary corpus directory: {path} has no {META_FILE} ({_HOW_TO_MAKE})"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(
                f"not a binary corpus directory: {meta_path} is not JSON ({err})"
            ) from None
        missing = [key for key in _REQUIRED_META if key not in meta]
        if meta.get("format") != FORMAT_NAME or missing:
            raise InputError(
                f"not a binary corpus directory: {meta_path} is not an {FORMAT_NAME!r} meta file"
                f"{f' (missing {missing})' if missing else ''} ({_HOW_TO_MAKE})"
            )
        if meta["version"] != FORMAT_VERSION:
            raise InputError(
                f"{meta_path}: binary corpus version {meta['version']} is not supported "
                f"(this code reads version {FORMAT_VERSION}); re-encode it ({_HOW_TO_MAKE})"
            )
        if meta["dtype"] not in ("uint16", "int32"):
            raise InputError(f"{meta_path}: unknown token dtype {meta['dtype']!r}")
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        tokens = _map(path / TOKENS_FILE, dtype, meta["num_tokens"])
        offsets = _map(path / OFFSETS_FILE, OFFSET_DTYPE, meta["num_lines"] + 1)
        if offsets[0] != 0 or offsets[-1] != meta["num_tokens"]:
            raise InputError(
                f"{path / OFFSETS_FILE}: offsets run from {int(offsets[0])} to {int(offsets[-1])}, "
                f"expected 0 to {meta['num_tokens']}; the corpus is damaged ({_HOW_TO_MAKE})"
            )
        return cls(path, meta, tokens, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def line(self, i: int) -> np.ndarray:
        """Token ids of line ``i`` (a read-only view into the memory map)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"line {i} out of range for a corpus of {n} lines")
        i %= n
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def line_lengths(self) -> np.ndarray:
        """Tokens per line (an ``int64`` array in memory)."""
        return np.diff(self.offsets)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.line(i)


def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    """Memory-map ``count`` items of ``dtype`` from ``path``, checking the file's size."""
    if not path.is_file():
        raise InputError(f"not a binary corpus directory: {path} is missing ({_HOW_TO_MAKE})")
    expected = count * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise InputError(
            f"{path} has {actual} bytes, but meta.json says {count} x {dtype.name} = {expected} "
            f"bytes; the corpus is damaged or incomplete ({_HOW_TO_MAKE})"
        )
    if count == 0:  # mmap cannot map an empty file
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))
