"""Command-line options shared by the downstream task CLIs (scripts/10-12).

They choose the converted encoder, how text is cut and padded, and how training runs; every task
CLI takes them with the same names, defaults and help, in tf2qrnn's spelling.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from ulmfit_keras.tasks import SCHEDULERS

F = TypeVar("F", bound=Callable)

EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

_ENCODER_OPTIONS = [
    click.option(
        "--spm-model-file",
        type=EXISTING_FILE,
        default=None,
        help="SentencePiece .model (default: the one in the export's spm_model/).",
    ),
    click.option(
        "--model-weights-cp",
        type=click.Path(exists=True, path_type=Path),
        required=True,
        help="Export directory of 05_convert (or its keras_weights folder).",
    ),
    click.option(
        "--model-type",
        type=click.Choice(["from_cp", "from_hub"]),
        default="from_cp",
        show_default=True,
        help="from_cp: fine-tune the encoder rebuilt from the export's Keras weights; from_hub: "
        "train the head over the export's SavedModel, kept frozen.",
    ),
    click.option(
        "--fixed-seq-len",
        type=click.IntRange(min=3),
        default=None,
        help="Pad every sequence to this length (default: the longest in the data).",
    ),
    click.option(
        "--max-seq-len",
        type=click.IntRange(min=3),
        default=300,
        show_default=True,
        help="Cut longer sequences to this many subword tokens (counted and logged).",
    ),
    click.option(
        "--num-epochs",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Training epochs.",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=32,
        show_default=True,
        help="Batch size.",
    ),
    click.option(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        default=1e-3,
        show_default=True,
        help="Peak learning rate (of the head; lower groups get less).",
    ),
    click.option(
        "--lr-scheduler",
        type=click.Choice(SCHEDULERS),
        default="stlr",
        show_default=True,
        help="Slanted triangular or one-cycle schedule.",
    ),
    click.option("--awd-off", is_flag=True, help="Turn AWD weight-drop off (weight_p = 0)."),
    click.option(
        "--qrnn",
        is_flag=True,
        help="Assert the export is a QRNN (an error if the export's config disagrees).",
    ),
]


def encoder_options(command: F) -> F:
    """Add the shared options to a click command, in the order listed above."""
    for option in reversed(_ENCODER_OPTIONS):
        command = option(command)
    return command
