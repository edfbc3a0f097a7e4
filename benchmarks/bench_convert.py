"""Stage 05 benchmarks: Keras vs PyTorch inference, and a full-size MultiFiT conversion.

1. **Inference.** The converted Keras encoder against the PyTorch reference forward
   (``convert.reference``: ``nn.LSTM`` / our torch QRNN, eval mode) on the same batch, on CPU,
   at a moderate size: emb 400, vocab 8000, AWD-LSTM 3x1152 and QRNN 4x1552, batch 32 x 70
   tokens. Keras runs inside ``tf.function`` (graph mode, as ``predict`` does); times are the
   minimum over interleaved repetitions after a warm-up; the outputs are checked to agree
   first. Target: Keras speed / PyTorch speed >= 0.8.
2. **Full-size conversion.** MultiFiT's model (vocab 35000, emb 400, QRNN 4x1552, ~34M
   parameters, random fastai-like weights) saved as a ``Learner.save``-style ``.pth`` with its
   ``.json`` sidecar, converted by ``scripts/05_convert.py`` in a fresh process, end to end:
   Keras weights, SavedModel, and every verification (PyTorch parity, masking, reloaded
   weights and SavedModel, in-graph tokenization). Target: < 60 s wall time, process start and
   imports included. The SPM model must have as many pieces as the embedding has rows, so a
   35000-piece SentencePiece model is trained first (not timed). The unigram trainer cannot
   reach 35000 pieces on the text available offline (the standard library's docstrings,
   1.2 MB; even 8 MB of site-packages docstrings support only ~26.5k), so it is a **BPE**
   model trained on the standard library's docstrings (well under a second); the converter
   treats both model types the same way.

    .venv-tf/bin/python -m benchmarks.bench_convert                 # about 3 minutes on 2 cores
    .venv-tf/bin/python -m benchmarks.bench_convert --skip-conversion --reps 10
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
import torch

import ulmfit_keras as uk
from benchmarks.timing import best_times
from convert.mapping import port_weights
from convert.reference import build_reference
from convert.testing import fastai_lm_state_dict, save_learner_file
from pretraining_utils.demo_corpus import write_demo_corpus
from pretraining_utils.spm import SpmConfig, build_spm
from ulmfit_core.artifacts import sha256_file
from ulmfit_core.lm_config import LMConfig
from ulmfit_torch.state_dict import read_lm_state

REPO_ROOT = Path(__file__).resolve().parent.parent
INFERENCE_TARGET = 0.8
CONVERSION_TARGET_S = 60.0
ARCHS = {"awd-lstm": (1152, 3), "qrnn": (1552, 4)}


def bench_inference(arch: str, vocab: int, batch: int, seq: int, reps: int) -> dict[str, float]:
    hidden, n_layers = ARCHS[arch]
    state = fastai_lm_state_dict(arch, vocab, 400, hidden, n_layers, init_range=None, seed=0)
    read = read_lm_state(state, "bench")
    config = read.config
    reference = build_reference(read)
    encoder, lm = uk.build_encoder(config.to_dict())
    port_weights(read, lm)

    ids = np.random.default_rng(0).integers(2, vocab, size=(batch, seq)).astype(np.int32)
    ids_torch = torch.from_numpy(ids.astype(np.int64))
    ids_tf = tf.constant(ids)
    keras_fn = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)
    diff = float(np.abs(keras_fn(ids_tf).numpy() - reference.encode(ids_torch).numpy()).max())
    if not diff <= 1e-5:
        raise AssertionError(f"{arch}: Keras and PyTorch differ by {diff}")
    threads = torch.get_num_threads()
    times = {}
    for n in sorted({1, threads}):
        # Both thread counts: on a loaded 2-core machine one torch thread is often faster.
        torch.set_num_threads(n)
        times[f"pytorch_{n}"] = best_times({"t": lambda: reference.encode(ids_torch)}, reps)["t"]
    torch.set_num_threads(threads)
    times["keras"] = best_times({"k": lambda: keras_fn(ids_tf).numpy()}, reps)["k"]
    times["pytorch"] = min(v for k, v in times.items() if k.startswith("pytorch_"))
    times["max_abs_diff"] = diff
    return times


def print_inference(args: argparse.Namespace) -> list[bool]:
    print(
        f"\n== 1. Encoder inference on CPU: batch {args.batch} x {args.seq} tokens, emb 400, "
        f"vocab {args.vocab}, best of {args.reps}; ratio against PyTorch's faster setting =="
    )
    print(
        f"{'arch':<18} {'pytorch ms (1 / N threads)':>27} {'keras ms':>9} {'keras tok/s':>12} "
        f"{'keras/pytorch speed':>20} {'max |diff|':>10}  target >= {INFERENCE_TARGET}x"
    )
    ok = []
    tokens = args.batch * args.seq
    for arch, (hidden, n_layers) in ARCHS.items():
        t = bench_inference(arch, args.vocab, args.batch, args.seq, args.reps)
        ratio = t["pytorch"] / t["keras"]
        ok.append(ratio >= INFERENCE_TARGET)
        name = f"{arch} {n_layers}x{hidden}"
        torch_ms = " / ".join(f"{1e3 * v:.1f}" for k, v in t.items() if k.startswith("pytorch_"))
        print(
            f"{name:<18} {torch_ms:>27} {1e3 * t['keras']:>9.1f} "
            f"{tokens / t['keras']:>12.0f} {ratio:>19.2f}x {t['max_abs_diff']:>10.2g}  "
            f"{'ok' if ok[-1] else 'MISSED'}"
        )
    return ok


def make_full_size_model(work: Path) -> tuple[Path, Path, float]:
    """A 35000-piece BPE SPM model and a random MultiFiT-size QRNN LM (.pth + .json)."""
    start = time.perf_counter()
    write_demo_corpus(work / "stdlib.txt")
    spm = build_spm(SpmConfig(work / "stdlib.txt", 35000, work / "bench", model_type="bpe"))
    config = LMConfig.create(
        "qrnn", 35000, emb_size=400, hidden_size=1552, n_layers=4,
        spm_model_sha256=sha256_file(spm.model_path),
    )  # fmt: skip
    state = fastai_lm_state_dict("qrnn", 35000, 400, 1552, 4, init_range=None, seed=0)
    pth = save_learner_file(work / "multifit.pth", state, config=config)
    return pth, spm.model_path, time.perf_counter() - start


def print_tables(log: str) -> None:
    """The parity tables the converter logged (a title line, then indented rows)."""
    title = re.compile(r"^\d\d:\d\d:\d\d INFO convert\.checks: (.* vs .*\d+ batches.*)$")
    inside = False
    for line in log.splitlines():
        match = title.match(line)
        if match:
            print(match.group(1))
            inside = True
        elif inside and line.startswith("  "):
            print(line)
        else:
            inside = False


def print_conversion(work: Path) -> bool:
    print("\n== 2. Full-size MultiFiT conversion (scripts/05_convert.py, fresh process) ==")
    pth, spm, setup_s = make_full_size_model(work)
    params = sum(
        t.numel() for k, t in torch.load(pth, weights_only=True)["model"].items()
        if k not in ("0.encoder_dp.emb.weight", "1.decoder.weight")
    )  # fmt: skip
    print(
        f"model: vocab 35000, emb 400, QRNN 4x1552, tied: {params / 1e6:.1f}M parameters, "
        f".pth {pth.stat().st_size / 2**20:.0f} MiB; SPM: 35000-piece BPE "
        f"(setup, not timed: {setup_s:.1f} s)"
    )
    command = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "05_convert.py"),
        "--pretrained-model", str(pth),
        "--spm-model-file", str(spm),
        "--out-path", str(work / "export"),
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(result.stderr[-4000:])
        raise SystemExit(f"conversion failed with exit code {result.returncode}")
    log = result.stderr
    for pattern in (r"05_convert: (time: .*)", r"05_convert: (fastai-.*)"):
        match = re.search(pattern, log)
        if match:
            print(match.group(1))
    print_tables(log)
    ok = wall < CONVERSION_TARGET_S
    print(
        f"end-to-end wall time (process start, imports, conversion, verification): {wall:.1f} s"
        f"  target < {CONVERSION_TARGET_S:.0f} s: {'ok' if ok else 'MISSED'}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=70)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--skip-conversion", action="store_true")
    args = parser.parse_args()
    # "no .json sidecar" for the toy models
    logging.getLogger("ulmfit_torch.state_dict").setLevel(logging.ERROR)
    logging.getLogger("convert").setLevel(logging.ERROR)
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other processes share "
        "the cores: timings are noisy)"
    )
    results = []
    if not args.skip_inference:
        results += print_inference(args)
    if not args.skip_conversion:
        with tempfile.TemporaryDirectory(prefix="bench-convert-") as work:
            results.append(print_conversion(Path(work)))
    print(f"\nall targets met: {all(results)}")


if __name__ == "__main__":
    main()
