"""Serving benchmark: one fine-tuned classifier in every deployment format, side by side, on CPU.

The same task directory (stages 10/11), the same sentences, one process, one run:

* ``pytorch``: :class:`task_export.torch_reference.TorchTaskModel`, what a fastai user would
  deploy (``nn.LSTM`` / the torch QRNN, the head in torch, ``torch.inference_mode``);
* ``keras``: the task's ``model.keras`` called inside ``tf.function`` (as ``predict`` runs it);
* ``saved_model``, ``tflite``, ``tflite_int8``: the stage-13 artifacts, strings in (their
  tokenizer is in the graph; TFLite takes one text per call, a batch is a loop over its texts);
  ``onnx``, ``onnx_int8``: ids + mask in, any length.

Every row's time is end to end from raw strings: ``pytorch``, ``keras`` and ``onnx`` tokenize
with SentencePiece in Python inside the timed call (``pytorch`` and ``keras`` pad to the
batch's longest sentence, as does ``onnx``, except a QRNN's ONNX, which has the export's fixed
``seq_len``).
Single-sentence latency is p50 / p99 over ``--single`` sentences, the candidates interleaved
sentence by sentence so that machine noise hits them alike; throughput is sentences/s over
``--batches`` batches of ``--batch-size``. Every runtime gets ``--threads`` intra-op threads
(TensorFlow and torch 1 inter-op thread). Outputs are first compared with the Keras model.

Targets: the best exported format's p50 latency at least 2x better than PyTorch's, and the int8
TFLite file at most 35 % of the float one. The export is made (``export_task``) when
``--export-dir`` does not exist. No assertion on timings: a MISS is printed, not raised.

    make demo-classifier && .venv-tf/bin/python -m benchmarks.bench_serve
    .venv-tf/bin/python -m benchmarks.bench_serve --task-dir T --export-dir E --threads 2
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TASK_DIR = Path("runs/demo/classifier")  # the Makefile's demo-classifier --out-path
DEFAULT_TEXTS = REPO_ROOT.parent / "shared" / "data" / "sst2_dev.tsv"
LATENCY_TARGET = 2.0
INT8_SIZE_TARGET = 0.35
EXPORTED = ("saved_model", "tflite", "tflite_int8", "onnx", "onnx_int8")
INPUTS = {
    "pytorch": "ids (spm in py)",
    "keras": "ids (spm in py)",
    "saved_model": "strings",
    "tflite": "strings",
    "tflite_int8": "strings",
    "onnx": "ids+mask (spm in py)",
    "onnx_int8": "ids+mask (spm in py)",
}

Predict = Callable[[list[str]], np.ndarray]


@dataclass
class Row:
    """One format's figures (``None``: not measured)."""

    name: str
    size_bytes: int | None = None
    latencies_s: list[float] = field(default_factory=list)
    throughput: float | None = None
    max_abs_diff: float | None = None
    label_agreement: float | None = None

    def p(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task-dir", type=Path, default=DEFAULT_TASK_DIR)
    parser.add_argument(
        "--export-dir", type=Path, default=None, help="default: TASK_DIR_export (made if missing)"
    )
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="a TSV with a header")
    parser.add_argument("--column", default="sentence", help="the text column of --texts")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per runtime")
    parser.add_argument("--single", type=int, default=200, help="sentences timed one by one")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument(
        "--tflite-seq-len", type=int, default=None, help="for the export, when it is made here"
    )
    args = parser.parse_args(argv)
    if args.export_dir is None:
        args.export_dir = args.task_dir.with_name(args.task_dir.name + "_export")
    if min(args.threads, args.single, args.batch_size, args.batches) < 1:
        parser.error("--threads, --single, --batch-size and --batches must be positive")
    return args


def read_texts(path: Path, column: str) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        texts = [row[column].strip() for row in reader if row.get(column)]
    if not texts:
        raise SystemExit(f"{path}: no texts in column {column!r}")
    return texts


def set_threads(threads: int) -> None:
    """The same intra-op thread count for TensorFlow and torch (before either runs an op)."""
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def size_of(path: Path) -> int | None:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.is_file() else None


def make_candidates(task_dir: Path, export_dir: Path, threads: int) -> tuple[dict, dict, dict]:
    """``(predict by name, file size by name, report.json)``: each predict maps a list of raw
    strings to probabilities (or scores), tokenization included."""
    import json

    import sentencepiece
    import tensorflow as tf
    import torch

    from task_export import layout
    from task_export.runtimes import load_onnx, load_saved_model, load_tflite, onnx_seq_len
    from task_export.torch_reference import TorchTaskModel
    from ulmfit_core.ids import PAD_ID
    from ulmfit_tasks.data import encode_texts
    from ulmfit_tasks.task_dir import MODEL_FILE, SPM_FILE, load_task_model, read_task

    kind = json.loads((task_dir / "task.json").read_text(encoding="utf-8"))["task"]
    task = read_task(task_dir, kind)
    key = "score" if kind == "regressor" else "probabilities"
    model = load_task_model(task_dir, task)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(task_dir / SPM_FILE))
    report_path = export_dir / layout.REPORT_FILE
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}

    def ids_of(texts: list[str], length: int | None = None) -> np.ndarray:
        fixed = length or task["fixed_seq_len"]
        return encode_texts(spm.encode, texts, length or task["max_seq_len"], fixed).ids

    reference = TorchTaskModel.from_keras(model, task)
    keras_fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def keras_predict(texts):
        out = keras_fn(tf.constant(ids_of(texts)))
        if kind == "regressor":
            return out.numpy()[:, 0] * task["normalizer"]["std"] + task["normalizer"]["mean"]
        return (out["predictions"] if isinstance(out, dict) else out).numpy()

    predict: dict[str, Predict] = {
        "pytorch": lambda texts: reference(torch.from_numpy(ids_of(texts)))[key].numpy(),
        "keras": keras_predict,
    }
    with tempfile.TemporaryDirectory() as tmp:  # what the torch user ships: the state dict
        torch.save(reference.state_dict(), Path(tmp) / "model.pth")
        sizes = {"pytorch": size_of(Path(tmp) / "model.pth")}
    sizes["keras"] = size_of(task_dir / MODEL_FILE)

    def strings(run):
        return lambda texts: run(text=np.asarray(texts, dtype=object))[key]

    def onnx_predict(path):
        run, fixed = load_onnx(path, threads), onnx_seq_len(path)  # fixed: a QRNN's

        def call(texts):
            ids = ids_of(texts, fixed)
            return run(token_ids=ids, mask=(ids != PAD_ID).astype(np.int32))[key]

        return call

    paths = {
        "saved_model": export_dir / layout.SAVED_MODEL_DIR,
        "tflite": export_dir / layout.TFLITE_FILE,
        "tflite_int8": export_dir / layout.TFLITE_INT8_FILE,
        "onnx": export_dir / layout.ONNX_FILE,
        "onnx_int8": export_dir / layout.ONNX_INT8_FILE,
    }
    loaders = {
        "saved_model": lambda p: strings(load_saved_model(p)),
        "tflite": lambda p: strings(load_tflite(p, threads)),
        "tflite_int8": lambda p: strings(load_tflite(p, threads)),
        "onnx": onnx_predict,
        "onnx_int8": onnx_predict,
    }
    for name, path in paths.items():
        sizes[name] = size_of(path)
        if sizes[name] is not None:
            predict[name] = loaders[name](path)
    return predict, sizes, report


def measure(
    predict: dict[str, Predict], texts: list[str], single: int, batch_size: int, batches: int
) -> dict[str, Row]:
    rows = {name: Row(name) for name in predict}
    probe = texts[:batch_size]
    want = predict["keras"](probe)
    for name, run in predict.items():
        got = run(probe)
        rows[name].max_abs_diff = float(np.max(np.abs(got - want)))
        if got.ndim == 2:
            rows[name].label_agreement = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    warm = 10
    for i in range(warm + single):  # interleaved, one sentence at a time
        sentence = [texts[i % len(texts)]]
        for name, run in predict.items():
            start = time.perf_counter()
            run(sentence)
            if i >= warm:
                rows[name].latencies_s.append(time.perf_counter() - start)
    totals = dict.fromkeys(predict, 0.0)
    for b in range(batches + 1):  # the first round warms up (batch-size shapes)
        chunk = [texts[(b * batch_size + j) % len(texts)] for j in range(batch_size)]
        for name, run in predict.items():
            start = time.perf_counter()
            run(chunk)
            if b:
                totals[name] += time.perf_counter() - start
    for name, total in totals.items():
        rows[name].throughput = batches * batch_size / total
    return rows


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_table(rows: dict[str, Row], batch_size: int) -> str:
    """The side-by-side table; ratios against ``pytorch`` (latency: torch p50 / p50,
    throughput: x / torch; above 1 is better than PyTorch)."""
    torch_row = rows.get("pytorch")
    header = (
        f"{'format':<12} {'input':<21} {'p50 ms':>8} {'p99 ms':>8} {'torch/x p50':>11} "
        f"{f'b{batch_size} sent/s':>12} {'x/torch':>8} {'size MB':>8} {'max|d| keras':>12} "
        f"{'labels=keras':>12}"
    )
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        p50, p99 = row.p(50), row.p(99)
        speedup = throughput_ratio = None
        if torch_row is not None and p50 and torch_row.p(50):
            speedup = torch_row.p(50) / p50
        if torch_row is not None and row.throughput and torch_row.throughput:
            throughput_ratio = row.throughput / torch_row.throughput
        size = None if row.size_bytes is None else row.size_bytes / 1e6
        lines.append(
            f"{name:<12} {INPUTS.get(name, ''):<21} "
            f"{_fmt(None if p50 is None else 1e3 * p50, '.2f', 8)} "
            f"{_fmt(None if p99 is None else 1e3 * p99, '.2f', 8)} "
            f"{_fmt(speedup, '.2f', 10)}x {_fmt(row.throughput, '.0f', 12)} "
            f"{_fmt(throughput_ratio, '.2f', 7)}x {_fmt(size, '.2f', 8)} "
            f"{_fmt(row.max_abs_diff, '.1e', 12)} {_fmt(row.label_agreement, '.1%', 12)}"
        )
    return "\n".join(lines)


def check_targets(rows: dict[str, Row], report: dict) -> list[str]:
    """PASS/MISS lines of the two targets (MISS, not an error, when a figure is missing)."""
    lines = []
    torch_p50 = rows["pytorch"].p(50) if "pytorch" in rows else None
    exported = {n: rows[n].p(50) for n in EXPORTED if n in rows and rows[n].p(50)}
    if torch_p50 and exported:
        best = min(exported, key=exported.get)
        ratio = torch_p50 / exported[best]
        verdict = "PASS" if ratio >= LATENCY_TARGET else "MISS"
        lines.append(
            f"{verdict}  single-sentence latency: best exported format {best}, p50 "
            f"{1e3 * exported[best]:.2f} ms against PyTorch's {1e3 * torch_p50:.2f} ms: "
            f"torch/x {ratio:.2f}x (target >= {LATENCY_TARGET:.0f}x)"
        )
    else:
        lines.append("MISS  single-sentence latency: no exported format or no PyTorch figure")
    float_size = rows["tflite"].size_bytes if "tflite" in rows else None
    int8_size = rows["tflite_int8"].size_bytes if "tflite_int8" in rows else None
    if float_size and int8_size:
        share = int8_size / float_size
        verdict = "PASS" if share <= INT8_SIZE_TARGET else "MISS"
        lines.append(
            f"{verdict}  int8 TFLite size: {int8_size / 1e6:.2f} MB = {share:.1%} of the float "
            f"file's {float_size / 1e6:.2f} MB (target <= {INT8_SIZE_TARGET:.0%})"
        )
    else:
        lines.append("MISS  int8 TFLite size: a TFLite file is missing")
    parity = report.get("artifacts", {}).get("tflite_int8", {}).get("parity", {})
    figures = [
        f"{label} {parity[key]:.1%}"
        for key, label in (
            ("label_agreement", "label agreement with Keras"),
            ("accuracy", "int8 accuracy"),
            ("keras_accuracy", "Keras accuracy"),
        )
        if key in parity
    ]
    if figures:
        lines.append(
            f"      report.json, int8 on {parity.get('texts', '?')} texts: {', '.join(figures)}"
        )
    return lines


def ensure_export(args: argparse.Namespace) -> None:
    if args.export_dir.exists():
        return
    from task_export.pipeline import export_task

    print(f"no export in {args.export_dir}: exporting {args.task_dir} (not timed) ...")
    start = time.perf_counter()
    export_task(args.task_dir, args.export_dir, tflite_seq_len=args.tflite_seq_len)
    print(f"exported in {time.perf_counter() - start:.1f} s")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("ulmfit_tasks.data").setLevel(logging.ERROR)  # "N sequences truncated"
    if not (args.task_dir / "task.json").is_file():
        raise SystemExit(
            f"{args.task_dir}: no trained task (task.json); run `make demo-classifier` or "
            "pass --task-dir"
        )
    set_threads(args.threads)
    import keras
    import onnxruntime
    import tensorflow as tf
    import torch

    ensure_export(args)
    texts = read_texts(args.texts, args.column)
    predict, sizes, report = make_candidates(args.task_dir, args.export_dir, args.threads)
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; threads per runtime: {args.threads} (inter-op 1)"
    )
    print(
        f"task {args.task_dir} ({report.get('task', '?')}, head {report.get('head', '?')}), "
        f"export {args.export_dir} (TFLite cut at {report.get('seq_len', '?')} tokens); "
        f"texts {args.texts.name}: {len(texts)}, {args.single} timed one by one, "
        f"{args.batches} batches of {args.batch_size}; where TFLite's cut is shorter than "
        "max_seq_len, its max|d| against Keras includes that cut"
    )
    rows = measure(predict, texts, args.single, args.batch_size, args.batches)
    for name, row in rows.items():
        row.size_bytes = sizes.get(name)
    print()
    print(format_table(rows, args.batch_size))
    print(
        "latency ratio: torch p50 / format p50; throughput ratio: format / torch (>1: faster); "
        "size: pytorch = its state dict (.pth), keras = model.keras, both without spm.model; "
        "the strings-in formats hold the tokenizer"
    )
    print()
    for line in check_targets(rows, report):
        print(line)


if __name__ == "__main__":
    main()
