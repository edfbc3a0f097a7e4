"""Write the demo corpus: prose from the installed Python standard library's docstrings."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pretraining_utils.demo_corpus import write_demo_corpus
from ulmfit_core.cli import run_stage, verbose_option

logger = logging.getLogger("00_demo_corpus")


@click.command()
@click.option(
    "--out-path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Raw-text file to write, one docstring paragraph per line.",
)
@click.option(
    "--source-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Directory of .py files to read instead of the interpreter's standard library.",
)
@click.option(
    "--max-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after about this many megabytes of text (default: all of it).",
)
@verbose_option
def main(out_path: Path, source_dir: Path | None, max_mb: float | None, verbose: bool) -> None:
    """Extract English prose from Python standard-library docstrings into OUT_PATH.

    The sources are parsed, never imported. Code examples, tables and indented blocks are left
    out; each remaining paragraph becomes one line of raw text for stage 01.
    """

    def work():
        max_bytes = None if max_mb is None else int(max_mb * 1e6)
        summary = write_demo_corpus(out_path, source_dir, max_bytes)
        logger.info(
            "demo corpus: %d paragraphs (%.1f MB) from %d files in %.1f s -> %s",
            summary.paragraphs,
            summary.bytes_written / 1e6,
            summary.files,
            summary.seconds,
            out_path,
        )

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
