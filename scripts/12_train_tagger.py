"""Stage 12: fine-tune a sequence tagger (e.g. IOB named entities) from a converted encoder.

Each JSONL line is one sentence, a list of [word, tag_id] pairs; the label map is a JSON object
{"0": "O", "1": "B-LOC", ...}. Word tags are aligned to subwords (--align first: later subwords
are ignored in loss and metrics; all: every subword gets the word's tag). Trains like the
classifier (STLR or one-cycle, discriminative learning rates, gradual unfreezing), logs
entity-level precision/recall/F1 on the validation sentences per epoch and writes
OUT/model.keras, OUT/task.json and OUT/spm.model. With --interactive it then reads sentences from
stdin (words separated by spaces) and prints word/TAG pairs. With --lr-finder N it only runs an
N-step learning-rate sweep and saves the loss-vs-LR plot.
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
    EXISTING_FILE,
    echo_lr_finder,
    lr_finder_option,
    training_options,
)
from ulmfit_tasks.config import SCHEMES, TaggerConfig
from ulmfit_tasks.predictors import TaggerPredictor
from ulmfit_tasks.tagger import find_tagger_lr, train_tagger

logger = logging.getLogger("12_train_tagger")


@click.command(help=__doc__)
@click.option(
    "--train-jsonl",
    type=EXISTING_FILE,
    required=True,
    help="Training sentences: one JSON list of [word, tag_id] pairs per line.",
)
@click.option(
    "--test-jsonl",
    type=EXISTING_FILE,
    default=None,
    help="Validation sentences; without it 10% of --train-jsonl (fixed seed) is held out.",
)
@click.option(
    "--label-map",
    type=EXISTING_FILE,
    required=True,
    help='JSON object from tag id to tag name, e.g. {"0": "O", "1": "B-LOC"}.',
)
@click.option(
    "--align",
    type=click.Choice(SCHEMES),
    default="first",
    show_default=True,
    help="Label the first subword of each word only, or all of its subwords.",
)
@training_options
@lr_finder_option
@click.option(
    "--interactive", is_flag=True, help="After training, tag sentences read from stdin until EOF."
)
@verbose_option
def main(
    train_jsonl: Path,
    test_jsonl: Path | None,
    label_map: Path,
    align: str,
    lr_finder: int | None,
    interactive: bool,
    verbose: bool,
    **training,
) -> None:
    def work() -> None:
        config = TaggerConfig(
            train_jsonl=train_jsonl,
            test_jsonl=test_jsonl,
            label_map=label_map,
            align=align,
            **training,
        )
        if lr_finder is not None:
            echo_lr_finder(*find_tagger_lr(config, lr_finder))
            return
        result = train_tagger(config)
        click.echo(f"validation entity F1: {result.val_f1:.4f}")
        click.echo(f"model: {result.out_path}")
        if interactive:
            predictor = TaggerPredictor(result.out_path)
            for line in sys.stdin:
                words = line.split()
                if words:
                    tags = predictor.predict([words])[0]
                    click.echo(" ".join(f"{w}/{t}" for w, t in zip(words, tags, strict=True)))

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
