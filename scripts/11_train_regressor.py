"""Stage 11: fine-tune a text regressor (one score per text) from a converted encoder.

The gold column holds numbers. Trains like the classifier (STLR or one-cycle, discriminative
learning rates, gradual unfreezing), logs the validation mean absolute error per epoch and writes
OUT/model.keras, OUT/task.json (with the label normalization) and OUT/spm.model. With
--interactive it then reads lines from stdin and prints one score per line. With --lr-finder N
it only runs an N-step learning-rate sweep and saves the loss-vs-LR plot.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ulmfit_core.quiet_tf import quiet_tensorflow

# TensorFlow prints its C++ start-up log lines while it is first imported: here, quieted.
with quiet_tensorflow(sys.argv[1:]):
    import tensorflow  # noqa: F401

from ulmfit_core.cli import run_stage, verbose_option
from ulmfit_tasks.cli_options import (
    echo_lr_finder,
    lr_finder_option,
    training_options,
    tsv_options,
)
from ulmfit_tasks.config import LOSSES, RegressorConfig
from ulmfit_tasks.predictors import TextRegressorPredictor
from ulmfit_tasks.regressor import find_regressor_lr, train_regressor

logger = logging.getLogger("11_train_regressor")


@click.command(help=__doc__)
@tsv_options(gold_help="Column holding the numeric target.")
@training_options
@lr_finder_option
@click.option(
    "--interactive", is_flag=True, help="After training, score lines read from stdin until EOF."
)
@click.option(
    "--loss-fn",
    type=click.Choice(sorted(LOSSES)),
    default="mse",
    show_default=True,
    help="Training loss: mean squared or mean absolute error.",
)
@click.option(
    "--normalize-labels",
    is_flag=True,
    help="Train on standardized targets; predictions are transformed back.",
)
@click.option("--no-batch-norm", is_flag=True, help="Drop the BatchNorm layers of the head.")
@verbose_option
def main(
    train_tsv: Path,
    test_tsv: Path | None,
    data_column_name: str,
    gold_column_name: str,
    lr_finder: int | None,
    interactive: bool,
    loss_fn: str,
    normalize_labels: bool,
    no_batch_norm: bool,
    verbose: bool,
    **training,
) -> None:
    def work() -> None:
        config = RegressorConfig(
            train_tsv=train_tsv,
            test_tsv=test_tsv,
            data_column=data_column_name,
            gold_column=gold_column_name,
            loss_fn=loss_fn,
            normalize_labels=normalize_labels,
            batch_norm=not no_batch_norm,
            **training,
        )
        if lr_finder is not None:
            echo_lr_finder(*find_regressor_lr(config, lr_finder))
            return
        result = train_regressor(config)
        click.echo(f"validation MAE: {result.val_mae:.4f}")
        click.echo(f"model: {result.out_path}")
        if interactive:
            predictor = TextRegressorPredictor(result.out_path)
            for line in sys.stdin:
                if line.strip():
                    click.echo(f"{predictor.predict([line.strip()])[0]:.4f}")

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
