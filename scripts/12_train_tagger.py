"""Stage 12: fine-tune a sequence tagger (e.g. IOB named entities) from a converted encoder.

Each JSONL line is one sentence, a list of [word, tag_id] pairs; the label map is a JSON object
{"0": "O", "1": "B-LOC", ...}. Word tags are aligned to subwords (--align first: later subwords
are ignored in loss and metrics; all: every subword gets the word's tag). Trains like the
classifier (STLR or one-cycle, discriminative learning rates, gradual unfreezing), logs
entity-level precision/recall/F1 on the validation sentences per epoch and writes
OUT/model.keras, OUT/task.json and OUT/spm.model. With --interactive it then reads sentences from
stdin (words separated by spaces) and prints word/TAG pairs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

from pretraining_utils.cli import run_stage, verbose_option
from ulmfit_keras.tagger_task import TaggerConfig, TaggerPredictor, train_tagger
from ulmfit_keras.tagging import SCHEMES
from ulmfit_keras.task_options import EXISTING_FILE, encoder_options

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
@encoder_options
@click.option(
    "--save-best", is_flag=True, help="Keep the epoch with the best validation F1, not the last."
)
@click.option(
    "--out-path",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the model and its task.json.",
)
@click.option(
    "--interactive", is_flag=True, help="After training, tag sentences read from stdin until EOF."
)
@click.option(
    "--unfreeze",
    type=click.Choice(["gradual", "none"]),
    default="gradual",
    show_default=True,
    help="Gradual unfreezing (top group first) or train all at once.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights and dropout.")
@verbose_option
def main(
    train_jsonl: Path,
    test_jsonl: Path | None,
    label_map: Path,
    align: str,
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
    unfreeze: str,
    seed: int,
    verbose: bool,
) -> None:
    config = TaggerConfig(
        train_jsonl=train_jsonl,
        test_jsonl=test_jsonl,
        label_map=label_map,
        align=align,
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
        unfreeze=unfreeze,
        seed=seed,
    )

    def work() -> None:
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
