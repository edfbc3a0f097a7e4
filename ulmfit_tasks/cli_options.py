"""Command-line options (and output) shared by the downstream task CLIs (scripts/10-12).

They choose the converted encoder, how text is cut and padded, and how training runs; every task
CLI takes them with the same names, defaults and help, in tf2qrnn's spelling. The parameters of
:func:`training_options` are exactly the fields of :class:`~ulmfit_tasks.config.TrainingConfig`
(``batch_norm`` aside), so a CLI passes them on as ``**training``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from ulmfit_core.cli import EXISTING_FILE, add_options, tsv_options
from ulmfit_keras import LRFinderResult
from ulmfit_tasks.config import MODEL_TYPES, SCHEDULERS, UNFREEZE

F = TypeVar("F", bound=Callable)

# Re-exported: the TSV options are shared with stage 08 (fastai side).
__all__ = ["EXISTING_FILE", "echo_lr_finder", "lr_finder_option", "training_options", "tsv_options"]


_TRAINING_OPTIONS = [
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
        type=click.Choice(MODEL_TYPES),
        default="from_cp",
        show_default=True,
        help="from_cp: fine-tune the encoder rebuilt from the export's Keras weights (with the "
        "export's dropouts); from_hub: fine-tune the export's SavedModel (its graph runs without "
        "dropout; AWD weight-drop is applied by a callback).",
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
        "--zoneout",
        type=click.FloatRange(min=0, max=1, max_open=True),
        default=None,
        help="QRNN only, from_cp only: zoneout probability on the forget gates while training "
        "(default: the export's, 0).",
    ),
    click.option(
        "--qrnn",
        is_flag=True,
        help="Assert the export is a QRNN (an error if the export's config disagrees).",
    ),
    click.option(
        "--unfreeze",
        type=click.Choice(UNFREEZE),
        default="gradual",
        show_default=True,
        help="Gradual unfreezing (head first, one more layer group each epoch) or train all "
        "groups from the start.",
    ),
    click.option(
        "--save-best",
        is_flag=True,
        help="Keep the epoch with the best validation score (accuracy, MAE or entity F1), not "
        "the last.",
    ),
    click.option(
        "--out-path",
        type=click.Path(file_okay=False, path_type=Path),
        required=True,
        help="Directory for model.keras, task.json, spm.model (and plots).",
    ),
    click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed of weights and dropout."
    ),
]


def training_options(command: F) -> F:
    """Add the shared options to a click command, in the order listed above."""
    return add_options(_TRAINING_OPTIONS, command)


def lr_finder_option(command: F) -> F:
    """``--lr-finder N``: the task CLIs' learning-rate sweep instead of training."""
    return click.option(
        "--lr-finder",
        type=click.IntRange(min=2),
        default=None,
        help="Only run N steps of an exponential LR sweep (1e-7 to 10), save "
        "OUT/lr_finder.png and print the suggested rate; no training.",
    )(command)


def echo_lr_finder(sweep: LRFinderResult, plot: Path) -> None:
    """What the task CLIs print after ``--lr-finder``."""
    click.echo(f"LR finder: {len(sweep.lrs)} steps, suggested lr {sweep.suggestion:.2e}")
    click.echo(f"plot: {plot}")
