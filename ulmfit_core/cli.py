"""What every stage CLI shares: logging setup, signal handling, error reporting.

Scripts call :func:`run_stage` with a zero-argument function that does the work; library code
below it never touches argv, handlers or exit codes.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from ulmfit_core.errors import InputError
from ulmfit_core.quiet_tf import VERBOSE_FLAGS

R = TypeVar("R")
F = TypeVar("F", bound=Callable)

# Libraries whose INFO lines are noise at our INFO level (TensorFlow's while saving: renamed
# inputs, asset paths); they log from WARNING up unless --verbose.
QUIET_LIBRARY_LOGGERS = ("absl", "tensorflow")


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger once: a compact format on stderr."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for name in QUIET_LIBRARY_LOGGERS:  # NOTSET: a verbose run after a quiet one, in one process
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def _raise_keyboard_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def run_stage(work: Callable[[], R], verbose: bool = False) -> R:
    """Run a stage's work with logging set up and errors turned into clean exits.

    SIGTERM is turned into KeyboardInterrupt so that ``kill`` cleans temporary files the same
    way Ctrl-C does. An :class:`InputError` becomes a one-line message and exit code 1.
    """
    setup_logging(verbose)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return work()
    except InputError as err:
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        logging.getLogger("pretraining_utils").error("interrupted; no output was written")
        sys.exit(130)


# The TF scripts read these flags from argv before click runs (ulmfit_core.quiet_tf).
verbose_option = click.option(
    *VERBOSE_FLAGS, is_flag=True, help="Log debug messages as well as progress and summaries."
)


EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def add_options(options: list[Callable[[F], F]], command: F) -> F:
    """Apply click options so that ``--help`` lists them in the order given."""
    for option in reversed(options):
        command = option(command)
    return command


def device_options(command: F) -> F:
    """``--device``, ``--fp16`` and ``--bf16`` of the fastai training stages (04, 08): where the
    run goes and its mixed precision (the ``device`` and ``precision`` parameters)."""
    options = [
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto (CUDA when available), cpu, cuda or cuda:N.",
        ),
        click.option(
            "--fp16",
            "precision",
            flag_value="fp16",
            help="float16 mixed precision (CUDA only; ignored with a warning on CPU).",
        ),
        click.option(
            "--bf16",
            "precision",
            flag_value="bf16",
            help="bfloat16 mixed precision (CUDA only; ignored with a warning on CPU).",
        ),
    ]
    return add_options(options, command)


def tsv_options(gold_help: str) -> Callable[[F], F]:
    """``--train-tsv``, ``--test-tsv`` and the two column names of the TSV stages (08, 10, 11)."""
    options = [
        click.option(
            "--train-tsv",
            type=EXISTING_FILE,
            required=True,
            help="Training data: tab-separated, with a header row.",
        ),
        click.option(
            "--test-tsv",
            type=EXISTING_FILE,
            default=None,
            help="Validation data; without it 10% of --train-tsv (fixed seed) is held out.",
        ),
        click.option(
            "--data-column-name",
            default="sentence",
            show_default=True,
            help="Column holding the text.",
        ),
        click.option("--gold-column-name", default="target", show_default=True, help=gold_help),
    ]
    return lambda command: add_options(options, command)


label_map_option = click.option(
    "--label-map",
    type=EXISTING_FILE,
    required=True,
    help="Text file with one label per line; line order = class index.",
)
