"""Fine-tuning benchmark: the same classifier trained by fastai (stage 08) and by Keras (stage 10).

From one stage-04 language model and one labelled set (GLUE SST-2: ``../shared/data/
sst2_train.tsv`` / ``sst2_dev.tsv``, a seeded training subset that fits a few minutes on 2 CPU
cores, all 872 dev sentences), in one run, three seeds each:

* ``fastai``: ``scripts/08_train_classifier.py`` in the fastai environment (a subprocess):
  ``get_text_classifier``, length-sorted pad-first batches, gradual unfreezing
  (``freeze_to(-1)``, ``-2``, ``-3``, ``unfreeze()``), one ``fit_one_cycle`` per phase;
* ``keras``: :func:`ulmfit_tasks.classifier.train_classifier` here, on the stage-05 export of
  the same LM: length-bucketed batches, gradual unfreezing (one more layer group per epoch),
  discriminative LRs, a one-cycle schedule over the run.

Same epochs, batch size, seeds and data; each its recipe's own dropouts and peak LR
(``--fastai-lr``, ``--keras-lr``). Printed: validation accuracy (mean ± spread over the seeds),
seconds per epoch (training + validation, mean over epochs and seeds), and the ratios.
Targets: Keras accuracy within 1 point of fastai's; Keras seconds per epoch <= fastai's. A MISS
is printed, never raised.

    make demo && .venv-tf/bin/python -m benchmarks.bench_finetune        # ~10 minutes, 2 cores
    .venv-tf/bin/python -m benchmarks.bench_finetune --train-size 2000 --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from convert.pipeline import ConvertConfig, convert
from ulmfit_tasks.classifier import train_classifier
from ulmfit_tasks.config import ClassifierConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT.parent / "shared" / "data"
DEMO = REPO_ROOT / "runs" / "demo"
FASTAI_PY = REPO_ROOT / ".venv-fastai" / "bin" / "python"
ACCURACY_TARGET = 0.01  # Keras within 1 point of fastai
logger = logging.getLogger("bench_finetune")


def write_subsets(out: Path, train_size: int, seed: int) -> tuple[Path, Path, Path]:
    """A seeded subset of SST-2 train, the whole dev set, and the label map ``0``, ``1``."""
    with (DATA / "sst2_train.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    picked = np.random.default_rng(seed).permutation(len(rows))[:train_size]
    train = out / "train.tsv"
    with train.open("w", encoding="utf-8", newline="") as handle:
        handle.write("label\tsentence\n")
        for i in sorted(picked):
            handle.write(f"{rows[i]['label']}\t{rows[i]['sentence']}\n")
    labels = out / "labels.txt"
    labels.write_text("0\n1\n", encoding="utf-8")
    return train, DATA / "sst2_dev.tsv", labels


def run_fastai(args, train: Path, dev: Path, labels: Path, work: Path, seed: int) -> dict:
    exp = f"fastai-seed{seed}"
    command = [
        str(FASTAI_PY), str(REPO_ROOT / "scripts" / "08_train_classifier.py"),
        "--train-tsv", str(train), "--test-tsv", str(dev), "--label-map", str(labels),
        "--data-column-name", "sentence", "--gold-column-name", "label",
        "--spm-model-file", str(args.spm_model_file),
        "--pretrained-model", str(args.pretrained_model),
        "--save-path", str(work), "--exp-name", exp, "--num-epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--lr", str(args.fastai_lr), "--seed", str(seed),
        "--device", "cpu",
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    with (work / f"{exp}.history.csv").open(encoding="utf-8") as handle:
        history = list(csv.DictReader(handle))
    return {
        "accuracy": float(history[-1]["accuracy"]),
        "seconds": [float(row["time"]) for row in history],
    }


def run_keras(args, train: Path, dev: Path, labels: Path, work: Path, seed: int) -> dict:
    keras.backend.clear_session()
    config = ClassifierConfig(
        model_weights_cp=args.export_dir,
        out_path=work / f"keras-seed{seed}",
        train_tsv=train,
        test_tsv=dev,
        data_column="sentence",
        gold_column="label",
        label_map=labels,
        num_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.keras_lr,
        lr_scheduler="1cycle",
        unfreeze="gradual",
        seed=seed,
    )
    result = train_classifier(config)
    return {
        "accuracy": result.history["val_accuracy"][-1],
        "seconds": list(result.history["epoch_seconds"]),
    }


def _summary(runs: list[dict]) -> tuple[float, float, float]:
    accuracies = np.array([run["accuracy"] for run in runs])
    seconds = np.mean([np.mean(run["seconds"]) for run in runs])
    return float(accuracies.mean()), float(accuracies.max() - accuracies.min()) / 2, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained-model", type=Path, default=DEMO / "lm" / "lm-awd-lstm.pth")
    parser.add_argument("--spm-model-file", type=Path, default=DEMO / "spm" / "spm-sp4k.model")
    parser.add_argument(
        "--export-dir",
        type=Path,
        default=None,
        help="stage 05's export of --pretrained-model (default: converted here)",
    )
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--fastai-lr", type=float, default=2e-2)
    parser.add_argument("--keras-lr", type=float, default=5e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    for path in (args.pretrained_model, args.spm_model_file):
        if not path.is_file():
            sys.exit(
                f"{path} not found: run `make demo`, or pass --pretrained-model/--spm-model-file"
            )
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        work = Path(tmp)
        if args.export_dir is None:
            args.export_dir = work / "export"
            convert(ConvertConfig(args.pretrained_model, args.spm_model_file, args.export_dir))
        train, dev, labels = write_subsets(work, args.train_size, seed=0)
        print(
            f"SST-2: {args.train_size} training sentences, 872 dev; LM {args.pretrained_model}; "
            f"{args.epochs} epochs, batch {args.batch_size}, seeds {args.seeds}",
            flush=True,
        )
        results: dict[str, list[dict]] = {"fastai": [], "keras": []}
        for seed in args.seeds:
            for name, run in (("fastai", run_fastai), ("keras", run_keras)):
                outcome = run(args, train, dev, labels, work, seed)
                results[name].append(outcome)
                print(
                    f"  seed {seed} {name:<6} accuracy {outcome['accuracy']:.4f}, seconds per "
                    f"epoch {', '.join(f'{s:.1f}' for s in outcome['seconds'])}",
                    flush=True,
                )
    fastai_acc, fastai_spread, fastai_s = _summary(results["fastai"])
    keras_acc, keras_spread, keras_s = _summary(results["keras"])
    print(f"\n{'':<8}{'val accuracy':>20}{'s / epoch':>12}")
    print(f"{'fastai':<8}{fastai_acc:>12.4f} ± {fastai_spread:.4f}{fastai_s:>12.2f}")
    print(f"{'keras':<8}{keras_acc:>12.4f} ± {keras_spread:.4f}{keras_s:>12.2f}")
    gap = keras_acc - fastai_acc
    ratio = fastai_s / keras_s
    print(
        f"accuracy keras - fastai: {100 * gap:+.2f} points (target >= -1): "
        f"{'MET' if gap >= -ACCURACY_TARGET else 'MISS'}"
    )
    print(
        f"speed fastai s/epoch / keras s/epoch: {ratio:.2f}x (target >= 1): "
        f"{'MET' if ratio >= 1 else 'MISS'}"
    )


if __name__ == "__main__":
    main()
