"""Stage 10: fine-tune a text classifier on a TSV file from a converted encoder (export dir).

Trains with slanted-triangular or one-cycle learning rates, discriminative learning rates
(lr / 2.6 per layer group down) and gradual unfreezing, logs validation accuracy per epoch and
writes OUT/model.keras, OUT/task.json and OUT/spm.model. With --head attention it also writes
OUT/attention.html and OUT/attention.png. With --interactive it then reads lines from stdin and
prints label probabilities (and the top tokens by attention weight). With --lr-finder N it only
runs an N-step learning-rate sweep and saves the loss-vs-LR plot. With --interactive-from DIR it
trains nothing and classifies stdin lines with the task directory DIR (one this stage wrote, or
a fastai classifier converted by 05_convert).
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

from ulmfit_core.classifier_config import DEFAULT_BPTT, DEFAULT_MAX_LEN
from ulmfit_core.cli import label_map_option, run_stage, verbose_option
from ulmfit_tasks.classifier import find_classifier_lr, train_classifier
from ulmfit_tasks.cli_options import (
    echo_lr_finder,
    lr_finder_option,
    training_options,
    tsv_options,
)
from ulmfit_tasks.config import HEADS, KEEP, ClassifierConfig
from ulmfit_tasks.predictors import TextClassifierPredictor, describe_predictions

logger = logging.getLogger("10_train_classifier")


def _classify_stdin(out_path: Path) -> None:
    predictor = TextClassifierPredictor(out_path)
    for line in sys.stdin:
        if line.strip():
            click.echo(describe_predictions(predictor, [line.strip()])[0])


def _interactive_from(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    """Eager: classify stdin with an existing task directory, before the training flags (which
    it does not need) are checked."""
    if value is None or ctx.resilient_parsing:
        return
    run_stage(lambda: _classify_stdin(value), "-v" in sys.argv or "--verbose" in sys.argv)
    ctx.exit()


@click.command(help=__doc__)
@tsv_options(gold_help="Column holding the label.")
@label_map_option
@training_options
@lr_finder_option
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
    "--keep",
    type=click.Choice(KEEP),
    default="first",
    show_default=True,
    help="How a long text is pooled (classic head). first: the text cut to --max-seq-len, pooled "
    "whole. last: fastai's semantics, the encoder reads the whole text (up to --max-seq-len: "
    "raise it for long documents) and the pooling covers its last --bptt chunks within --max-len.",
)
@click.option(
    "--bptt",
    type=click.IntRange(min=1),
    default=DEFAULT_BPTT,
    show_default=True,
    help="With --keep last: fastai's chunk length.",
)
@click.option(
    "--max-len",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_LEN,
    show_default=True,
    help="With --keep last: fastai's max_len, the pooled window.",
)
@click.option(
    "--interactive-from",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    is_eager=True,
    expose_value=False,
    callback=_interactive_from,
    help="Train nothing: classify lines read from stdin with this task directory (stage 10's, or "
    "a fastai classifier converted by 05_convert). No other flag is needed.",
)
@verbose_option
def main(
    train_tsv: Path,
    test_tsv: Path | None,
    data_column_name: str,
    gold_column_name: str,
    label_map: Path,
    lr_finder: int | None,
    interactive: bool,
    head: str,
    no_batch_norm: bool,
    keep: str,
    bptt: int,
    max_len: int,
    verbose: bool,
    **training,
) -> None:
    def work() -> None:
        config = ClassifierConfig(
            train_tsv=train_tsv,
            test_tsv=test_tsv,
            data_column=data_column_name,
            gold_column=gold_column_name,
            label_map=label_map,
            head=head,
            batch_norm=not no_batch_norm,
            keep=keep,
            bptt=bptt,
            max_len=max_len,
            **training,
        )
        if lr_finder is not None:
            echo_lr_finder(*find_classifier_lr(config, lr_finder))
            return
        result = train_classifier(config)
        click.echo(f"validation accuracy: {result.val_accuracy:.4f}")
        click.echo(f"model: {result.out_path}")
        if result.attention_png is not None:
            click.echo(f"attention heatmap: {result.attention_png}")
        if interactive:
            _classify_stdin(result.out_path)

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
