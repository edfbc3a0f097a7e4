"""Stage 06: perplexity of a converted LM on held-out text, in PyTorch and in TensorFlow."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ulmfit_core.quiet_tf import quiet_tensorflow

# TensorFlow prints its C++ start-up log lines while it is first imported: here, quieted.
with quiet_tensorflow(sys.argv[1:]):
    import tensorflow  # noqa: F401

from evaluation.perplexity import TF_MODELS, EvalConfig, EvalSummary, evaluate_lm
from ulmfit_core.cli import run_stage, verbose_option

logger = logging.getLogger("06_evaluate_lm")


@click.command()
@click.option(
    "--export-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The output directory of 05_convert.py.",
)
@click.option(
    "--corpus-path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Held-out text encoded by 03_encode_spm.py: a binary corpus directory or a text id file.",
)
@click.option(
    "--tf-model",
    type=click.Choice(TF_MODELS),
    default="keras",
    show_default=True,
    help="keras: the model rebuilt from keras_weights/; saved_model: its lm_logits signature.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--bptt", type=click.IntRange(min=1), default=70, show_default=True)
@click.option(
    "--max-batches",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate only the first N batches (default: the whole corpus).",
)
@click.option(
    "--tolerance",
    type=float,
    default=1e-3,
    show_default=True,
    help="Largest relative difference of the two perplexities (1e-3 = 0.1%).",
)
@verbose_option
def main(
    export_dir: Path,
    corpus_path: Path,
    tf_model: str,
    batch_size: int,
    bptt: int,
    max_batches: int | None,
    tolerance: float,
    verbose: bool,
) -> None:
    """Perplexity of the LM in EXPORT_DIR on CORPUS_PATH, in PyTorch and in TF.

    Both sides get fastai's LM stream batches (file order) and evaluate every window from a
    zero state (the Keras model is stateless per call), so the numbers are comparable with each
    other, not with fastai's valid_loss, which carries the state across windows. Prints both
    perplexities and their relative difference; exits non-zero when it exceeds --tolerance.
    """

    def work() -> EvalSummary:
        summary = evaluate_lm(
            EvalConfig(
                export_dir=export_dir,
                corpus_path=corpus_path,
                tf_model=tf_model,
                batch_size=batch_size,
                bptt=bptt,
                max_batches=max_batches,
                tolerance=tolerance,
            )
        )
        click.echo(
            f"perplexity: pytorch {summary.torch_perplexity:.4f}  tf ({summary.tf_model}) "
            f"{summary.tf_perplexity:.4f}  relative difference {summary.relative_diff:.2e}  "
            f"({summary.tokens} tokens)"
        )
        return summary

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
