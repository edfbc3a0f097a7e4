"""Language-model batches over a memory-mapped token stream, as fastai's ``LMDataLoader`` cuts them.

fastai's scheme: the lines (in a fresh random order each epoch) are concatenated into one stream,
the stream is cut into ``bs`` equal parallel streams of ``bl`` tokens, and batch ``j`` holds the
``j``-th window of ``bptt`` tokens of every stream (the last window may be shorter), with targets
shifted by one token. Hidden state carries over from one batch to the next within a stream.

Memory hardly grows with the corpus (8 bytes per 64 lines: 1 MB for 8M lines). Nothing is
materialised per line, not even an index:

* The epoch's line order is a pseudo-random bijection computed on the fly
  (:class:`LinePermutation`, a Feistel network), not a stored permutation. It is a different
  shuffle than fastai's (Python's ``random``), but a well-mixed one.
* Filters (``min_len``, the held-out validation split of :class:`HoldOut`) are predicates
  evaluated on the fly from the memory-mapped offsets.
* At :meth:`LMStreamBatches.set_epoch` one streaming pass sums the tokens of every block of
  ``BLOCK_LINES`` consecutive lines *in epoch order*; only those block totals are kept
  (8 bytes per 64 lines). A batch then finds, for each token position it needs, its block by
  binary search, expands just those few blocks (permutation, filters, lengths) and gathers the
  tokens from the memory map with one vectorized lookup.

When unshuffled, batches are identical to fastai's ``LMDataLoader`` over the same lines
(``tests/fastai/test_lm_data.py`` checks it batch for batch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pretraining_utils.corpus import BinaryCorpus, BinaryCorpusWriter
from ulmfit_core.errors import InputError

logger = logging.getLogger(__name__)

BLOCK_LINES = 64  # lines per block: the granularity of the only per-epoch index
CHUNK_LINES = 1 << 16  # lines per step of the streaming passes (a multiple of BLOCK_LINES)
_FEISTEL_ROUNDS = 6
_HOLDOUT_SALT = np.uint64(0x9E3779B97F4A7C15)  # fixed: the split depends on the corpus only


@dataclass(frozen=True)
class StreamLayout:
    """How a corpus of ``num_tokens`` tokens is cut into batches."""

    bs: int  # parallel streams in all (every process's, in distributed training)
    bptt: int
    stream_len: int  # tokens per parallel stream ("bl" in fastai)
    n_batches: int
    last_len: int  # length of the final, possibly shorter, window


def stream_layout(num_tokens: int, bs: int, bptt: int) -> StreamLayout:
    """fastai's arithmetic: drop the tail that does not fill all ``bs`` streams."""
    usable = ((num_tokens - 1) // bs) * bs  # -1 leaves room for the last target
    stream_len = usable // bs
    if stream_len < 1:
        raise InputError(
            f"corpus too small for {bs} parallel streams: {num_tokens} tokens give no full "
            "stream; use a smaller --batch-size (or fewer processes) or more text"
        )
    n_batches = -(-stream_len // bptt)
    return StreamLayout(bs, bptt, stream_len, n_batches, stream_len - (n_batches - 1) * bptt)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective, well-mixing hash of uint64 values."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class LinePermutation:
    """A seeded pseudo-random bijection of ``[0, n)``, evaluated element-wise without a table.

    A balanced Feistel network on the smallest even number of bits covering ``n`` permutes
    ``[0, 4^k)``; values that land at or beyond ``n`` are mapped again until they fall inside
    ("cycle walking"), which keeps it a bijection of ``[0, n)``.
    """

    def __init__(self, n: int, seed: int | tuple[int, ...]) -> None:
        if n < 1:
            raise ValueError(f"cannot permute an empty range (n={n})")
        bits = max(2, (n - 1).bit_length())
        bits += bits & 1
        self.n = n
        self._half = np.uint64(bits // 2)
        self._mask = np.uint64((1 << (bits // 2)) - 1)
        rng = np.random.default_rng(seed)
        self._keys = [np.uint64(k) for k in rng.integers(0, 2**63, _FEISTEL_ROUNDS)]

    def _rounds(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self._half, x & self._mask
        for key in self._keys:
            left, right = right, left ^ (_mix64(right ^ key) & self._mask)
        return (left << self._half) | right

    def __call__(self, i: np.ndarray) -> np.ndarray:
        """The images of the positions ``i`` (any int array with values in ``[0, n)``)."""
        shape = np.shape(i)
        out = self._rounds(np.asarray(i, dtype=np.uint64).ravel())
        todo = np.flatnonzero(out >= self.n)
        while len(todo):
            out[todo] = self._rounds(out[todo])
            todo = todo[out[todo] >= self.n]
        return out.astype(np.int64).reshape(shape)


@dataclass(frozen=True)
class HoldOut:
    """A deterministic pseudo-random ``fraction`` of the lines, e.g. a validation split.

    A line is held out when a hash of its index (with a fixed salt) falls below ``fraction``,
    so the split depends only on the corpus, not on the training seed, and needs no storage.
    ``held_out=True`` keeps the held-out lines (validation), ``False`` keeps all the others.
    """

    fraction: float
    held_out: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise InputError(f"the held-out fraction must be in (0, 1), got {self.fraction}")

    def keep(self, lines: np.ndarray) -> np.ndarray:
        """Whether each line index in ``lines`` belongs to this side of the split."""
        hashed = _mix64(np.asarray(lines).astype(np.uint64) ^ _HOLDOUT_SALT)
        held = (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53 < self.fraction
        return held if self.held_out else ~held


class LMStreamBatches:
    """Batches ``(x, y)`` of shape ``(bs, seq)`` from a token array and its line offsets.

    Args:
        tokens: every line's ids concatenated (a ``np.memmap`` for real corpora).
        offsets: ``n_lines + 1`` int64 offsets; line ``i`` is ``tokens[offsets[i]:offsets[i+1]]``.
        bs: parallel streams of this process.
        bptt: window length (fastai's ``seq_len``).
        shuffle: reorder lines at every :meth:`set_epoch` (training); keep file order otherwise.
        min_len: drop lines with fewer tokens (BOS/EOS included), counted in ``dropped_lines``.
        seed: base of the per-epoch shuffling seed, so epoch ``e`` always gets the same order.
        line_ids: use only these lines, in this order (before shuffling); default all lines.
        holdout: keep only one side of a :class:`HoldOut` split.
        rank, world_size: distributed data parallelism. The stream layout is that of
            ``bs * world_size`` streams over the whole corpus, and this process reads streams
            ``rank * bs ... (rank + 1) * bs - 1`` of it: every process gets the same number of
            batches, and together they see exactly one process's batches of ``bs * world_size``.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        bs: int,
        bptt: int,
        shuffle: bool = False,
        min_len: int = 0,
        seed: int = 0,
        *,
        line_ids: np.ndarray | None = None,
        holdout: HoldOut | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if bs < 1 or bptt < 1:
            raise InputError(f"batch size and bptt must be positive, got bs={bs}, bptt={bptt}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size} processes")
        self.tokens, self.bs, self.bptt, self.shuffle, self.seed = tokens, bs, bptt, shuffle, seed
        self.min_len, self.holdout, self.rank, self.world_size = min_len, holdout, rank, world_size
        # A view of the memory map, not a copy: offsets are read where they lie.
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._line_ids = None if line_ids is None else np.asarray(line_ids, dtype=np.int64)
        n_file_lines = len(self._offsets) - 1
        if (
            self._line_ids is not None
            and len(self._line_ids)
            and (self._line_ids.min() < 0 or self._line_ids.max() >= n_file_lines)
        ):
            raise InputError(f"line_ids outside the corpus's {n_file_lines} lines")
        self._universe = n_file_lines if self._line_ids is None else len(self._line_ids)
        self._count_lines()
        self.layout = stream_layout(self.num_tokens, bs * world_size, bptt)
        self.epoch: int | None = None
        self._perm: LinePermutation | None = None
        self._block_cum: np.ndarray | None = None
        self.set_epoch(0)

    # -- lines ----------------------------------------------------------------------------------

    def _lengths(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Line indices of universe positions ``u`` and their lengths (0 when filtered out)."""
        lines = u if self._line_ids is None else self._line_ids[u]
        lengths = self._offsets[lines + 1] - self._offsets[lines]
        keep = lengths >= self.min_len if self.min_len > 0 else None
        if self.holdout is not None:
            side = self.holdout.keep(lines)
            keep = side if keep is None else keep & side
        return lines, (lengths if keep is None else np.where(keep, lengths, 0))

    def _count_lines(self) -> None:
        """One streaming pass: lines and tokens kept, short lines dropped."""
        kept_lines = kept_tokens = short = considered = 0
        for start in range(0, self._universe, CHUNK_LINES):
            u = np.arange(start, min(self._universe, start + CHUNK_LINES), dtype=np.int64)
            lines = u if self._line_ids is None else self._line_ids[u]
            lengths = self._offsets[lines + 1] - self._offsets[lines]
            side = np.ones(len(u), bool) if self.holdout is None else self.holdout.keep(lines)
            long_enough = lengths >= self.min_len
            considered += int(side.sum())
            short += int((side & ~long_enough).sum())
            kept = side & long_enough
            kept_lines += int(kept.sum())
            kept_tokens += int(lengths[kept].sum())
        self.num_lines, self.num_tokens, self.dropped_lines = kept_lines, kept_tokens, short
        if short:  # debug: callers report it with their context (train/valid)
            logger.debug(
                "dropped %d of %d lines shorter than %d tokens", short, considered, self.min_len
            )

    # -- epochs and batches -----------------------------------------------------------------------

    def __len__(self) -> int:
        return self.layout.n_batches

    def set_epoch(self, epoch: int) -> None:
        """Fix the line order for an epoch (a fresh permutation when shuffling)."""
        if not self.shuffle and self._block_cum is not None:
            self.epoch = epoch  # file order: nothing changes
            return
        perm = LinePermutation(self._universe, (self.seed, epoch)) if self.shuffle else None
        n_blocks = -(-self._universe // BLOCK_LINES)
        sums = np.zeros(n_blocks, dtype=np.int64)
        for start in range(0, self._universe, CHUNK_LINES):
            i = np.arange(start, min(self._universe, start + CHUNK_LINES), dtype=np.int64)
            _, lengths = self._lengths(i if perm is None else perm(i))
            pad = -len(lengths) % BLOCK_LINES
            if pad:
                lengths = np.concatenate([lengths, np.zeros(pad, dtype=np.int64)])
            first = start // BLOCK_LINES
            block = lengths.reshape(-1, BLOCK_LINES).sum(axis=1)
            sums[first : first + len(block)] = block
        block_cum = np.zeros(n_blocks + 1, dtype=np.int64)
        np.cumsum(sums, out=block_cum[1:])
        if block_cum[-1] != self.num_tokens:  # the filters are not deterministic: a bug
            raise AssertionError(
                f"epoch pass found {block_cum[-1]} tokens, expected {self.num_tokens}"
            )
        self._perm, self._block_cum, self.epoch = perm, block_cum, epoch

    def batch(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of batch ``j``: int64 arrays of shape ``(bs, seq_len)``."""
        layout = self.layout
        if not 0 <= j < layout.n_batches:
            raise IndexError(f"batch {j} out of range (0..{layout.n_batches - 1})")
        seq_len = layout.last_len if j == layout.n_batches - 1 else layout.bptt
        streams = self.rank * self.bs + np.arange(self.bs, dtype=np.int64)
        first = streams * layout.stream_len + j * layout.bptt
        positions = first[:, None] + np.arange(seq_len + 1, dtype=np.int64)[None, :]
        window = np.asarray(self.tokens[self._file_positions(positions)]).astype(np.int64)
        return window[:, :-1], window[:, 1:]

    def _file_positions(self, positions: np.ndarray) -> np.ndarray:
        """Where the epoch-order stream positions ``positions`` lie in ``tokens``."""
        block_cum = self._block_cum
        blocks = np.unique(np.searchsorted(block_cum, positions, side="right") - 1)
        # Expand only the blocks that hold the wanted positions: their lines in epoch order.
        i = blocks[:, None] * BLOCK_LINES + np.arange(BLOCK_LINES, dtype=np.int64)[None, :]
        inside = i < self._universe
        u = np.zeros_like(i)
        u[inside] = i[inside] if self._perm is None else self._perm(i[inside])
        lines, lengths = self._lengths(u)
        lengths[~inside] = 0
        line_pos = block_cum[blocks][:, None] + np.cumsum(lengths, axis=1) - lengths
        line_pos, file_start = line_pos.ravel(), self._offsets[lines].ravel()
        # Non-decreasing over blocks in order, so the last line starting at or before a position
        # is the line that holds it (filtered lines have length 0 and are never chosen).
        k = np.searchsorted(line_pos, positions, side="right") - 1
        return file_start[k] + (positions - line_pos[k])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for j in range(len(self)):
            yield self.batch(j)


# ---------------------------------------------------------------------------------------------
# Opening training inputs
# ---------------------------------------------------------------------------------------------


def open_token_corpus(
    path: str | os.PathLike,
    vocab_size: int | None = None,
    convert_dir: str | os.PathLike | None = None,
) -> BinaryCorpus:
    """Open stage 03's binary corpus directory, or convert a text id file into one.

    The text id format (``03_encode_spm.py --output-format id``: one line of space-separated
    ids per corpus line) has no meta data, so ``vocab_size`` is required for it. It is parsed
    line by line in Python and written to ``convert_dir``: fine for small corpora; encode large
    ones with ``--output-format bin`` instead.

    Raises:
        InputError: a missing path, a text file without ``vocab_size``, ids out of range.
    """
    path = Path(path)
    if path.is_dir():
        return BinaryCorpus.open(path)
    if not path.is_file():
        raise InputError(f"training input {path} not found")
    if vocab_size is None:
        raise InputError(
            f"{path} is a text id file, which does not record its vocabulary size: pass "
            "--vocab-size, or use the binary corpus (03_encode_spm.py --output-format bin)"
        )
    if convert_dir is None:
        raise ValueError("convert_dir is required to read a text id file")
    return convert_id_text(path, vocab_size, Path(convert_dir))


def convert_id_text(
    path: Path, vocab_size: int, directory: Path, lines_per_chunk: int = 10_000
) -> BinaryCorpus:
    """Write the text id file ``path`` as a binary corpus in ``directory`` and open it."""
    logger.info(
        "converting text ids %s to a binary corpus (use --output-format bin for speed)", path
    )
    directory.mkdir(parents=True, exist_ok=True)
    writer = BinaryCorpusWriter(directory, vocab_size)
    line_no = 0
    try:
        with open(path, "rb") as f:
            while True:
                chunk = [line for _, line in zip(range(lines_per_chunk), f, strict=False)]
                if not chunk:
                    break
                try:
                    ids = [line.split() for line in chunk]
                    lengths = np.fromiter((len(line) for line in ids), np.int64, len(ids))
                    tokens = np.array([int(t) for line in ids for t in line], dtype=np.int64)
                except ValueError as err:
                    raise InputError(
                        f"{path}: not a text id file near line {line_no + 1} ({err})"
                    ) from None
                try:
                    writer.append(tokens, lengths)
                except ValueError:
                    bad = int(tokens[(tokens < 0) | (tokens >= vocab_size)][0])
                    raise InputError(
                        f"{path}: token id {bad} near lines {line_no + 1}-{line_no + len(chunk)} "
                        f"is outside the vocabulary of {vocab_size} (--vocab-size)"
                    ) from None
                line_no += len(chunk)
        writer.finish(source_path=str(path), converted_from="id-text")
    finally:
        writer.close()
    return BinaryCorpus.open(directory)
