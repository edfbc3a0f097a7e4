"""The memory-mapped LM batches: fastai's layout, shuffling, filters, splits, ranks, memory."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch
from fastai.text.data import LMDataLoader

from pretraining_utils.corpus import BinaryCorpus, BinaryCorpusWriter
from pretraining_utils.lm_data import (
    BLOCK_LINES,
    HoldOut,
    LinePermutation,
    LMStreamBatches,
    open_token_corpus,
    stream_layout,
)
from tests.helpers import REPO_ROOT
from ulmfit_core.errors import InputError
from ulmfit_core.ids import BOS_ID, EOS_ID

VOCAB = 1000


def synthetic_corpus(n_lines: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lines ``<s> w ... w </s>`` of 0-38 words, every 7th line empty (``<s> </s>``)."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 39, n_lines)
    words[::7] = 0
    lines = [
        np.concatenate([[BOS_ID], rng.integers(4, VOCAB, n), [EOS_ID]]).astype(np.uint16)
        for n in words
    ]
    offsets = np.concatenate([[0], np.cumsum([len(line) for line in lines])]).astype(np.int64)
    return np.concatenate(lines), offsets


def lines_of(tokens: np.ndarray, offsets: np.ndarray, ids=None) -> list[np.ndarray]:
    ids = range(len(offsets) - 1) if ids is None else ids
    return [tokens[offsets[i] : offsets[i + 1]] for i in ids]


def epoch_stream(batches: LMStreamBatches) -> np.ndarray:
    """The token stream an epoch covers, rebuilt from its batches: stream after stream."""
    xs, ys = zip(*batches, strict=True)
    x = np.concatenate(xs, axis=1)
    last_targets = ys[-1][:, -1:]
    rows = np.concatenate([x, last_targets], axis=1)  # each stream: stream_len + 1 tokens
    return np.concatenate([rows[0], *[row[1:] for row in rows[1:]]])


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_corpus()


@pytest.mark.parametrize(
    ("bs", "bptt", "min_len"), [(16, 20, 0), (7, 33, 0), (1, 13, 0), (9, 70, 6)]
)
def test_unshuffled_batches_equal_fastai_lmdataloader(corpus, bs, bptt, min_len):
    tokens, offsets = corpus
    kept = [t for t in lines_of(tokens, offsets) if len(t) >= min_len]
    fastai_dl = LMDataLoader(
        [torch.from_numpy(t.astype(np.int64)) for t in kept], bs=bs, seq_len=bptt, shuffle=False
    )
    ours = LMStreamBatches(tokens, offsets, bs, bptt, min_len=min_len)
    assert len(ours) == len(fastai_dl)
    for (x, y), (fx, fy) in zip(ours, fastai_dl, strict=True):
        np.testing.assert_array_equal(x, fx.numpy())
        np.testing.assert_array_equal(y, fy.numpy())


def test_shuffling_changes_line_order_per_epoch_and_keeps_whole_lines(corpus):
    tokens, offsets = corpus
    batches = LMStreamBatches(tokens, offsets, bs=8, bptt=30, shuffle=True, seed=3)
    streams = {}
    for epoch in (0, 1, 0):
        batches.set_epoch(epoch)
        streams.setdefault(epoch, []).append(epoch_stream(batches))
    np.testing.assert_array_equal(streams[0][0], streams[0][1])  # a function of (seed, epoch)
    assert not np.array_equal(streams[0][0], streams[1][0])
    corpus_lines = Counter(tuple(t) for t in lines_of(tokens, offsets))
    unshuffled = epoch_stream(LMStreamBatches(tokens, offsets, bs=8, bptt=30))
    for stream in (streams[0][0], streams[1][0]):
        # BOS/EOS kept: the stream is whole corpus lines <s> ... </s>, each used at most as often
        # as it occurs, cut only at the end (fastai drops the tail that does not fill all streams).
        assert stream[0] == BOS_ID and len(stream) == len(unshuffled)
        ends = np.flatnonzero(stream == EOS_ID)
        pieces = np.split(stream[: ends[-1] + 1], ends[:-1] + 1)
        assert all(p[0] == BOS_ID and p[-1] == EOS_ID for p in pieces)
        assert not Counter(tuple(p) for p in pieces) - corpus_lines
        assert len(stream) - (ends[-1] + 1) < max(len(t) for t in lines_of(tokens, offsets))
    other_seed = LMStreamBatches(tokens, offsets, bs=8, bptt=30, shuffle=True, seed=4)
    assert not np.array_equal(epoch_stream(other_seed), streams[0][0])


def test_min_len_filtering_is_counted_and_logged(corpus, caplog):
    tokens, offsets = corpus
    lengths = np.diff(offsets)
    with caplog.at_level(logging.DEBUG, logger="pretraining_utils.lm_data"):
        batches = LMStreamBatches(tokens, offsets, bs=4, bptt=10, min_len=3)
    short = int((lengths < 3).sum())
    assert short > 0
    assert batches.dropped_lines == short
    assert batches.num_lines == len(lengths) - short
    assert batches.num_tokens == int(lengths[lengths >= 3].sum())
    assert f"dropped {short} of {len(lengths)} lines shorter than 3 tokens" in caplog.text
    assert not np.any(
        (epoch_stream(batches)[:-1] == BOS_ID) & (epoch_stream(batches)[1:] == EOS_ID)
    )


def test_held_out_split_is_disjoint_complementary_and_deterministic(corpus):
    tokens, offsets = corpus
    n = len(offsets) - 1
    held = HoldOut(0.05).keep(np.arange(n))
    np.testing.assert_array_equal(HoldOut(0.05, held_out=False).keep(np.arange(n)), ~held)
    assert 0.03 < held.mean() < 0.07
    train = LMStreamBatches(tokens, offsets, 4, 10, holdout=HoldOut(0.05, held_out=False))
    valid = LMStreamBatches(tokens, offsets, 4, 10, holdout=HoldOut(0.05))
    assert train.num_lines + valid.num_lines == n
    assert train.num_tokens + valid.num_tokens == len(tokens)
    # The validation stream is exactly the held-out lines, in file order.
    expected = np.concatenate(lines_of(tokens, offsets, np.flatnonzero(held)))
    stream = epoch_stream(valid)
    np.testing.assert_array_equal(stream, expected[: len(stream)])
    # The split does not depend on the shuffling seed.
    shuffled = LMStreamBatches(
        tokens, offsets, 4, 10, shuffle=True, seed=9, holdout=HoldOut(0.05, held_out=False)
    )
    assert shuffled.num_tokens == train.num_tokens


def test_explicit_line_ids_select_and_order_lines(corpus):
    tokens, offsets = corpus
    ids = np.array([5, 3, 100, 2000, 7, 8, 9, 10, 11, 12])
    batches = LMStreamBatches(tokens, offsets, 2, 10, line_ids=ids)
    expected = np.concatenate(lines_of(tokens, offsets, ids))
    stream = epoch_stream(batches)
    np.testing.assert_array_equal(stream, expected[: len(stream)])
    with pytest.raises(InputError, match="line_ids outside"):
        LMStreamBatches(tokens, offsets, 2, 10, line_ids=np.array([len(offsets)]))


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_read_disjoint_streams_of_one_global_layout(corpus, shuffle):
    tokens, offsets = corpus
    world, bs = 3, 4
    single = LMStreamBatches(tokens, offsets, bs * world, 25, shuffle=shuffle, seed=1, min_len=3)
    ranks = [
        LMStreamBatches(
            tokens, offsets, bs, 25, shuffle=shuffle, seed=1, min_len=3, rank=r, world_size=world
        )
        for r in range(world)
    ]
    for epoch in (0, 1):
        for b in [single, *ranks]:
            b.set_epoch(epoch)
        assert {len(b) for b in ranks} == {len(single)}
        for j in range(len(single)):
            x, y = single.batch(j)
            parts = [b.batch(j) for b in ranks]
            np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
            np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 64, 1000, 4099])
def test_line_permutation_is_a_seeded_bijection(n):
    values = LinePermutation(n, (7, 0))(np.arange(n))
    assert sorted(values.tolist()) == list(range(n))
    np.testing.assert_array_equal(values, LinePermutation(n, (7, 0))(np.arange(n)))
    if n > 16:
        assert not np.array_equal(values, LinePermutation(n, (7, 1))(np.arange(n)))
        assert not np.array_equal(values, np.arange(n))


def test_blocks_smaller_than_a_window_and_partial_last_block():
    # Lines of one token each: a window of 50 spans several blocks; 1000 lines end mid-block.
    tokens = np.arange(1000, dtype=np.uint16) % VOCAB
    offsets = np.arange(1001, dtype=np.int64)
    assert 1000 % BLOCK_LINES
    batches = LMStreamBatches(tokens, offsets, 3, 50, shuffle=True, seed=0)
    stream = epoch_stream(batches)
    assert len(set(stream.tolist())) == len(stream)  # no line twice
    unshuffled = epoch_stream(LMStreamBatches(tokens, offsets, 3, 50))
    np.testing.assert_array_equal(unshuffled, tokens[: len(unshuffled)])


def test_too_small_corpus_is_a_clear_error():
    with pytest.raises(InputError, match="corpus too small for 64 parallel streams"):
        stream_layout(num_tokens=50, bs=64, bptt=10)


def _write_bin(directory, tokens, offsets):
    directory.mkdir()
    writer = BinaryCorpusWriter(directory, VOCAB)
    writer.append(tokens, np.diff(offsets))
    writer.finish()


def test_text_ids_convert_to_the_same_binary_corpus(corpus, tmp_path):
    tokens, offsets = corpus
    text = "".join(" ".join(map(str, line)) + "\n" for line in lines_of(tokens, offsets))
    (tmp_path / "ids.txt").write_text(text, encoding="utf-8")
    converted = open_token_corpus(tmp_path / "ids.txt", VOCAB, tmp_path / "converted")
    np.testing.assert_array_equal(np.asarray(converted.tokens), tokens)
    np.testing.assert_array_equal(np.asarray(converted.offsets), offsets)
    assert converted.vocab_size == VOCAB
    _write_bin(tmp_path / "bin", tokens, offsets)
    assert isinstance(open_token_corpus(tmp_path / "bin"), BinaryCorpus)
    with pytest.raises(InputError, match="pass --vocab-size"):
        open_token_corpus(tmp_path / "ids.txt", None, tmp_path / "x")
    with pytest.raises(InputError, match=r"token id \d+ near lines .* vocabulary of 500"):
        open_token_corpus(tmp_path / "ids.txt", 500, tmp_path / "y")
    (tmp_path / "bad.txt").write_text("2 5 3\n2 x 3\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a text id file"):
        open_token_corpus(tmp_path / "bad.txt", VOCAB, tmp_path / "z")


MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys, tracemalloc
    from pretraining_utils.corpus import BinaryCorpus
    from pretraining_utils.lm_data import HoldOut, LMStreamBatches

    def rss_anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        raise KeyError("RssAnon")

    corpus = BinaryCorpus.open(sys.argv[1])
    # Warm up on a few lines, so that lazily imported modules are not counted below.
    small = LMStreamBatches(corpus.tokens, corpus.offsets, 4, 70, shuffle=True,
                            line_ids=list(range(1000)), holdout=HoldOut(0.05))
    small.batch(0)
    anon0 = rss_anon()
    tracemalloc.start()  # numpy reports its array allocations to tracemalloc
    batches = LMStreamBatches(corpus.tokens, corpus.offsets, 64, 70, shuffle=True, seed=0,
                              min_len=3, holdout=HoldOut(0.05, held_out=False))
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        for j in range(0, len(batches), max(1, len(batches) // 200)):
            batches.batch(j)
    current, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"anon": rss_anon() - anon0, "current": current, "peak": peak,
                      "lines": batches.num_lines}))
    """
)


def test_memory_stays_small_on_a_20m_token_corpus(tmp_path):
    n_tokens = 20_000_000
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, n_tokens // 20)
    cum = np.cumsum(lengths)
    n_lines = int(np.searchsorted(cum, n_tokens)) + 1
    lengths = lengths[:n_lines]
    lengths[-1] -= int(cum[n_lines - 1] - n_tokens)
    directory = tmp_path / "big"
    directory.mkdir()
    tokens = np.memmap(directory / "tokens.bin", dtype="<u2", mode="w+", shape=(n_tokens,))
    for start in range(0, n_tokens, 1 << 22):  # in pieces: the test's own memory stays small too
        stop = min(n_tokens, start + (1 << 22))
        tokens[start:stop] = rng.integers(0, VOCAB, stop - start, dtype=np.uint16)
    tokens.flush()
    del tokens
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype("<i8")
    offsets.tofile(directory / "offsets.bin")
    meta = {
        "format": "ulmfit-corpus",
        "version": 1,
        "dtype": "uint16",
        "vocab_size": VOCAB,
        "num_lines": n_lines,
        "num_tokens": n_tokens,
    }
    (directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    corpus_bytes = n_tokens * 2 + offsets.nbytes
    del offsets, lengths, cum

    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(directory)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    used = json.loads(result.stdout)
    assert used["lines"] > 600_000
    # What the loader keeps after two epochs: block totals (8 bytes per 64 lines), nothing per line.
    assert used["current"] < (used["lines"] // 64 + 1) * 8 + (1 << 20), used
    # Its peak: the streaming passes' fixed-size chunks, far below the corpus's 45 MB.
    assert used["peak"] < 16 << 20 and used["peak"] < corpus_bytes // 4, (used, corpus_bytes)
    # The process's anonymous memory agrees. (Its RSS also counts the file pages of the memory map
    # that reading touched: page cache, shared and dropped by the kernel under pressure.)
    assert used["anon"] < 16 << 20, used
