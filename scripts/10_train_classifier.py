"""Stage 10: fine-tune a text classifier on a TSV file from a converted encoder (export dir).

Trains with slanted-triangular or one-cycle learning rates, discriminative learning rates
(lr / 2.6 per layer group down) and gradual unfreezing, logs validation accuracy per epoch and
writes OUT/model.keras, OUT/task.json and OUT/spm.model. With --head attention it also writes
OUT/attention.html and OUT/attention.png. With --interactive it then reads lines from stdin and
prints label probabilities (and the top tokens by attention weight). With --lr-finder N it only
runs an N-step learning-rate sweep and saves the loss-vs-LR plot.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

from pretraining_utils.cli import run_stage, verbose_option
from ulmfit_keras.task_options import EXISTING_FILE, encoder_options
from ulmfit_keras.tasks import (
    HEADS,
    ClassifierConfig,
    TextClassifierPredictor,
    describe_predictions,
    find_classifier_lr,
    train_classifier,
)

logger = logging.getLogger("10_train_classifier")


@click.command(help=__doc__)
@click.option(
    "--train-tsv",
    type=EXISTING_FILE,
    required=True,
    help="Training data: tab-separated, with a header row.",
)
@click.option(
    "--test-tsv",
    type=EXISTING_FILE,
    default=None,
    help="Validation data; without it 10% of --train-tsv (fixed seed) is held out.",
)
@click.option(
    "--data-column-name", default="sentence", show_default=True, help="Column holding the text."
)
@click.option(
    "--gold-column-name", default="target", show_default=True, help="Column holding the label."
)
@click.option(
    "--label-map",
    type=EXISTING_FILE,
    required=True,
    help="Text file with one label per line; line order = class index.",
)
@encoder_options
@click.option(
    "--save-best",
    is_flag=True,
    help="Keep the epoch with the best validation accuracy, not the last.",
)
@click.option(
    "--out-path",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the model, its task.json and (attention) the heatmaps.",
)
@click.option(
    "--interactive", is_flag=True, help="After training, classify lines read from stdin until EOF."
)
@click.option(
    "--head",
    type=click.Choice(HEADS),
    default="classic",
    show_default=True,
    help="Concat-pooling classifier, or Branching Attention with token weights.",
)
@click.option(
    "--no-batch-norm", is_flag=True, help="Drop the BatchNorm layers of the classic head."
)
@click.option(
    "--unfreeze",
    type=click.Choice(["gradual", "none"]),
    default="gradual",
    show_default=True,
    help="Gradual unfreezing (top group first) or train all at once.",
)
@click.option(
    "--lr-finder",
    type=click.IntRange(min=2),
    default=None,
    help="Only run N steps of an exponential LR sweep, save OUT/lr_finder.png and exit.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights and dropout.")
@verbose_option
def main(
    train_tsv: Path,
    test_tsv: Path | None,
    data_column_name: str,
    gold_column_name: str,
    label_map: Path,
    spm_model_file: Path | None,
    model_weights_cp: Path,
    model_type: str,
    fixed_seq_len: int | None,
    max_seq_len: int,
    num_epochs: int,
    batch_size: int,
    lr: float,
    lr_scheduler: str,
    awd_off: bool,
    qrnn: bool,
    save_best: bool,
    out_path: Path,
    interactive: bool,
    head: str,
    no_batch_norm: bool,
    unfreeze: str,
    lr_finder: int | None,
    seed: int,
    verbose: bool,
) -> None:
    config = ClassifierConfig(
        train_tsv=train_tsv,
        test_tsv=test_tsv,
        data_column=data_column_name,
        gold_column=gold_column_name,
        label_map=label_map,
        spm_model_file=spm_model_file,
        model_weights_cp=model_weights_cp,
        model_type=model_type,
        out_path=out_path,
        fixed_seq_len=fixed_seq_len,
        max_seq_len=max_seq_len,
        num_epochs=num_epochs,
        batch_size=batch_size,
        lr=lr,
        lr_scheduler=lr_scheduler,
        awd_off=awd_off,
        qrnn=qrnn,
        save_best=save_best,
        head=head,
        batch_norm=not no_batch_norm,
        unfreeze=unfreeze,
        seed=seed,
    )

    def work() -> None:
        if lr_finder is not None:
            sweep, plot = find_classifier_lr(config, lr_finder)
            click.echo(f"LR finder: {len(sweep.lrs)} steps, suggested lr {sweep.suggestion:.2e}")
            click.echo(f"plot: {plot}")
            return
        result = train_classifier(config)
        click.echo(f"validation accuracy: {result.val_accuracy:.4f}")
        click.echo(f"model: {result.out_path}")
        if result.attention_png is not None:
            click.echo(f"attention heatmap: {result.attention_png}")
        if interactive:
            predictor = TextClassifierPredictor(result.out_path)
            for line in sys.stdin:
                if line.strip():
                    click.echo(describe_predictions(predictor, [line.strip()])[0])

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
