"""Benchmark stage 03 (encode) against raw sentencepiece and the predecessor's line-by-line loop.

Measured in one run, on the same file, best of ``--repeats`` (the methods take turns, so a
busy machine slows them alike):

* stage 03: ``encode_corpus`` end to end (read, check UTF-8, encode, format, write), for the
  ``id`` and ``bin`` formats;
* raw: ``SentencePieceProcessor.encode(all_lines, add_bos=True, add_eos=True,
  num_threads=WORKERS)`` on a list read beforehand (reading is not timed, nothing is written);
* loop: for each line ``sp.encode(line, add_bos=True, add_eos=True)`` and write
  ``' '.join(map(str, ids))``, one process (tf2qrnn's approach).

Targets: stage 03 / raw >= 0.9 and stage 03 / loop >= 2. Without ``--corpus`` it writes about
``--target-mb`` of demo text (standard-library docstrings, repeated) to a temporary directory;
without ``--model`` it trains a ``--vocab-size`` unigram model on that text first.

    python -m benchmarks.bench_encode [--corpus FILE --model FILE.model] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sentencepiece

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretraining_utils.demo_corpus import write_demo_corpus
from pretraining_utils.encode import DEFAULT_CHUNK_BYTES, EncodeConfig, encode_corpus
from pretraining_utils.parallel import default_workers
from pretraining_utils.spm import SpmConfig, build_spm


def make_corpus(path: Path, target_bytes: int) -> None:
    """About ``target_bytes`` of real English: the demo corpus, repeated."""
    demo = path.with_suffix(".demo.txt")
    write_demo_corpus(demo)
    text = demo.read_bytes()
    demo.unlink()
    copies, rest = divmod(target_bytes, len(text))
    tail = text[: text.rfind(b"\n", 0, rest) + 1]  # whole lines only
    path.write_bytes(text * copies + tail)


def raw_encode(sp: sentencepiece.SentencePieceProcessor, lines: list[str], workers: int) -> int:
    ids = sp.encode(lines, add_bos=True, add_eos=True, num_threads=workers)
    return sum(map(len, ids))


def line_loop(sp: sentencepiece.SentencePieceProcessor, corpus: Path, out: Path) -> int:
    tokens = 0
    with open(corpus, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in src:
            ids = sp.encode(line.rstrip("\n"), add_bos=True, add_eos=True)
            tokens += len(ids)
            dst.write(" ".join(map(str, ids)) + "\n")
    return tokens


def stage03(corpus: Path, model: Path, out: Path, fmt: str, workers: int, chunk_bytes: int) -> int:
    config = EncodeConfig(
        corpus, model, out, output_format=fmt, workers=workers, chunk_bytes=chunk_bytes
    )
    return encode_corpus(config).tokens


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpus", type=Path, help="Text corpus, one sentence per line (default: demo text)."
    )
    parser.add_argument(
        "--model", type=Path, help="SentencePiece .model (default: train one on the corpus)."
    )
    parser.add_argument(
        "--target-mb", type=float, default=5.0, help="Size of the generated corpus in MB."
    )
    parser.add_argument(
        "--vocab-size", type=int, default=8000, help="Vocab size of the trained model."
    )
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="Threads for stage 03 and raw."
    )
    parser.add_argument(
        "--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help="Stage 03's chunk size."
    )
    parser.add_argument("--repeats", type=int, default=5, help="Runs per method; the best counts.")
    parser.add_argument(
        "--skip-loop", action="store_true", help="Leave out the slow line-by-line loop."
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_encode-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = args.corpus
        if corpus is None:
            corpus = tmp / "corpus.txt"
            make_corpus(corpus, int(args.target_mb * 1e6))
        model = args.model
        if model is None:
            model = build_spm(SpmConfig(corpus, args.vocab_size, tmp / "bench")).model_path
        sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
        lines = corpus.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()

        methods: dict[str, tuple[Callable[[], int], Path | None]] = {
            "stage03 id": (
                lambda: stage03(
                    corpus, model, tmp / "ids.txt", "id", args.workers, args.chunk_bytes
                ),
                tmp / "ids.txt",
            ),
            "stage03 bin": (
                lambda: stage03(corpus, model, tmp / "bin", "bin", args.workers, args.chunk_bytes),
                tmp / "bin",
            ),
            "raw encode": (lambda: raw_encode(sp, lines, args.workers), None),
        }
        if not args.skip_loop:
            methods["line loop"] = (
                lambda: line_loop(sp, corpus, tmp / "loop.txt"),
                tmp / "loop.txt",
            )

        best = dict.fromkeys(methods, float("inf"))
        tokens: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, (run, output) in methods.items():
                if output is not None:
                    remove(output)
                start = time.perf_counter()
                tokens[name] = run()
                best[name] = min(best[name], time.perf_counter() - start)
        if len(set(tokens.values())) != 1:
            raise SystemExit(f"methods disagree on the token count: {tokens}")
        if not args.skip_loop and (tmp / "ids.txt").read_bytes() != (tmp / "loop.txt").read_bytes():
            raise SystemExit("stage 03's id output differs from the line-by-line loop's")

        n_tokens = next(iter(tokens.values()))
        size_mb = corpus.stat().st_size / 1e6
        print(
            f"corpus: {size_mb:.1f} MB, {len(lines)} lines, {n_tokens} tokens; "
            f"vocab {sp.get_piece_size()}; workers {args.workers}; best of {args.repeats}"
        )
        print(f"{'method':<14}{'seconds':>9}{'Mtok/s':>9}")
        for name, seconds in best.items():
            print(f"{name:<14}{seconds:>9.3f}{n_tokens / seconds / 1e6:>9.2f}")
        for fmt in ("id", "bin"):
            stage = best[f"stage03 {fmt}"]
            print(f"stage03 {fmt:<3} / raw  = {best['raw encode'] / stage:5.2f}   (target >= 0.9)")
            if "line loop" in best:
                print(f"stage03 {fmt:<3} / loop = {best['line loop'] / stage:5.2f}   (target >= 2)")


if __name__ == "__main__":
    main()
