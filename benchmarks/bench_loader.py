"""Benchmark stage 04's data loading: time and memory to the first batch, ours vs the predecessor's.

* ours: ``BinaryCorpus.open`` (memory maps) → ``LMStreamBatches`` (shuffled, 5% held out) →
  ``LMStreamDataLoader`` (the fastai ``DataLoader`` the Learner uses) → first batch.
* list-of-tensors: what tf2qrnn did — one ``torch.LongTensor`` per corpus line in a Python list,
  fed to fastai's ``LMDataLoader`` (shuffled) → first batch. The tensors are made from the same
  memory-mapped corpus, which is cheaper than the predecessor's parsing of text ids, and
  ``LMDataLoader`` is used directly instead of through ``Datasets``: a lower bound on its cost.

Each measurement runs in a fresh subprocess, so that its peak RSS (``ru_maxrss``) is its own.
Reported: seconds from opening the corpus to the first batch (imports excluded), peak RSS and
its growth over the process after imports, and at the first batch the growth of anonymous
memory (RssAnon: what the loader itself allocated) and the file pages mapped (RssFile). RSS
counts the file pages of a memory map that were touched: page cache, shared and dropped by the
kernel under pressure. On this kernel a fault maps a whole page-cache folio (up to 2 MB), so a
few hundred random reads map ~100 MB of a hot file; that part grows with the corpus, the
loader's own (anonymous) memory does not.

Corpora are synthetic (random ids, line lengths uniform in 1..59, mean 30), written once in the
stage-03 binary format to a temporary directory.

    python -m benchmarks.bench_loader [--tokens 100000000] [--small-tokens 10000000]
        [--baseline-timeout 150] [--workdir DIR]

Targets: ours < 2 s to the first batch; its memory independent of the corpus size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pretraining_utils.corpus import BinaryCorpusWriter  # noqa: E402

VOCAB = 32_000

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np, torch
from fastai.text.data import LMDataLoader
from lm_training.loaders import LMStreamDataLoader
from pretraining_utils.corpus import BinaryCorpus
from pretraining_utils.lm_data import HoldOut, LMStreamBatches

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def maxrss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

kind, path, bs, bptt = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
imported = time.perf_counter()
rss0, anon0, file0 = maxrss(), status("RssAnon"), status("RssFile")
start = time.perf_counter()
corpus = BinaryCorpus.open(path)
if kind == "ours":
    batches = LMStreamBatches(corpus.tokens, corpus.offsets, bs, bptt, shuffle=True, seed=0,
                              holdout=HoldOut(0.05, held_out=False))
    dl = LMStreamDataLoader(batches)
else:
    offsets = corpus.offsets
    lines = [torch.from_numpy(corpus.tokens[offsets[i]:offsets[i + 1]].astype(np.int64))
             for i in range(len(offsets) - 1)]
    dl = LMDataLoader(lines, bs=bs, seq_len=bptt, shuffle=True)
x, y = next(iter(dl))
seconds = time.perf_counter() - start
assert x.shape == (bs, bptt)
print(json.dumps({"seconds": seconds, "import_seconds": imported - t0, "maxrss": maxrss(),
                  "maxrss_after_imports": rss0, "anon": status("RssAnon"), "anon0": anon0,
                  "file": status("RssFile"), "file0": file0, "batches": len(dl)}))
"""


def write_corpus(directory: Path, n_tokens: int, seed: int = 0) -> float:
    """A stage-03 binary corpus of ``n_tokens`` random ids in lines of 1-59 tokens; MB written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    writer = BinaryCorpusWriter(directory, VOCAB)
    written, lines = 0, 0
    while written < n_tokens:
        lengths = rng.integers(1, 60, 1 << 16)
        cum = np.cumsum(lengths)
        if written + cum[-1] >= n_tokens:
            keep = int(np.searchsorted(cum, n_tokens - written)) + 1
            lengths = lengths[:keep]
            lengths[-1] -= int(written + lengths.sum() - n_tokens)
        tokens = rng.integers(4, VOCAB, int(lengths.sum()), dtype=np.int64)
        writer.append(tokens, lengths)
        written += len(tokens)
        lines += len(lengths)
    writer.finish()
    return sum(f.stat().st_size for f in directory.iterdir()) / 1e6


def measure(kind: str, corpus: Path, bs: int, bptt: int, timeout: float) -> dict | None:
    cmd = [sys.executable, "-c", CHILD, kind, str(corpus), str(bs), str(bptt)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        raise RuntimeError(f"{kind} on {corpus} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000_000, help="large corpus size")
    parser.add_argument("--small-tokens", type=int, default=10_000_000, help="small corpus size")
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument(
        "--baseline-timeout",
        type=float,
        default=150.0,
        help="seconds before the list-of-tensors loader is stopped",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to write the corpora (default: a temporary directory)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-loader-", dir=args.workdir) as work:
        sizes = sorted({args.small_tokens, args.tokens})
        corpora = {}
        for n in sizes:
            started = time.perf_counter()
            mb = write_corpus(Path(work) / f"c{n}", n)
            corpora[n] = Path(work) / f"c{n}"
            print(
                f"wrote a {n / 1e6:.0f}M-token corpus ({mb:.0f} MB) in "
                f"{time.perf_counter() - started:.1f} s"
            )

        rows = []
        for n in sizes:
            for kind in ("ours", "list-of-tensors"):
                timeout = args.baseline_timeout if kind != "ours" else 600
                rows.append((n, kind, measure(kind, corpora[n], args.bs, args.bptt, timeout)))

    print(
        f"\nfirst batch of {args.bs} x {args.bptt}, shuffled; {os.cpu_count()} CPUs; "
        "imports not timed (about the same for both: torch + fastai)"
    )
    mb = 2**20
    header = (
        f"{'corpus':>8} {'loader':<16} {'to 1st batch':>13} {'peak RSS':>9} {'growth':>8} "
        f"{'anon+':>7} {'file+':>7}"
    )
    print(header)
    print("-" * len(header))
    results = {}
    for n, kind, r in rows:
        label = f"{n / 1e6:.0f}M"
        if r is None:
            stopped = f"> {args.baseline_timeout:.0f} s"
            print(f"{label:>8} {kind:<16} {stopped:>13}  (stopped)")
            continue
        results[(n, kind)] = r
        r["growth"] = max(r["maxrss"] - r["maxrss_after_imports"], 1)
        r["anon_growth"] = max(r["anon"] - r["anon0"], 0)
        r["file_growth"] = max(r["file"] - r["file0"], 0)
        print(
            f"{label:>8} {kind:<16} {r['seconds']:12.2f}s {r['maxrss'] / mb:8.0f}M "
            f"{r['growth'] / mb:7.0f}M {r['anon_growth'] / mb:6.0f}M {r['file_growth'] / mb:6.0f}M"
        )
    print("growth: peak RSS minus RSS after imports. At the first batch, anon+: anonymous memory")
    print("allocated since the imports (the loader's own); file+: corpus file pages mapped since")
    print("the imports (page cache, shared, reclaimable)")

    print()
    for n in sizes:
        ours, theirs = results.get((n, "ours")), results.get((n, "list-of-tensors"))
        if ours and theirs:
            print(
                f"{n / 1e6:.0f}M tokens, list-of-tensors / ours: "
                f"time {theirs['seconds'] / ours['seconds']:.0f}x, "
                f"peak RSS {theirs['maxrss'] / ours['maxrss']:.1f}x, "
                f"RSS growth {theirs['growth'] / ours['growth']:.0f}x, "
                f"anonymous memory >= {theirs['anon_growth'] / max(ours['anon_growth'], mb):.0f}x"
            )
        elif ours:
            print(
                f"{n / 1e6:.0f}M tokens: list-of-tensors stopped after "
                f"{args.baseline_timeout:.0f} s; ours took {ours['seconds']:.2f} s"
            )
    small, large = results.get((sizes[0], "ours")), results.get((sizes[-1], "ours"))
    if small and large and len(sizes) > 1:
        print(
            f"ours, {sizes[-1] / 1e6:.0f}M vs {sizes[0] / 1e6:.0f}M tokens "
            f"({sizes[-1] / sizes[0]:.0f}x the corpus): anonymous memory "
            f"{large['anon_growth'] / mb:.1f} vs {small['anon_growth'] / mb:.1f} MB, "
            f"peak RSS {large['maxrss'] / mb:.0f} vs {small['maxrss'] / mb:.0f} MB "
            f"(file pages: {large['file_growth'] / mb:.0f} vs {small['file_growth'] / mb:.0f} MB)"
        )
        target = "met" if large["seconds"] < 2.0 else "MISSED"
        print(
            f"target < 2 s to the first batch at {sizes[-1] / 1e6:.0f}M tokens: {target} "
            f"({large['seconds']:.2f} s)"
        )


if __name__ == "__main__":
    main()
