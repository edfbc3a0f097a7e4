"""Load a conversion's SavedModel with plain TensorFlow and encode a sentence with it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ulmfit_core.quiet_tf import quiet_tensorflow

# TensorFlow prints its C++ start-up log lines while it is first imported: here, quieted.
with quiet_tensorflow(sys.argv[1:]):
    import tensorflow  # noqa: F401

from evaluation.tryout import try_export
from ulmfit_core.cli import run_stage, verbose_option

logger = logging.getLogger("07_try_export")


@click.command()
@click.option(
    "--export-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Output directory of 05_convert.py.",
)
@click.option(
    "--sentence",
    default="Return the number of items in a container.",
    show_default=True,
    help="Raw text to encode.",
)
@verbose_option
def main(export_dir: Path, sentence: str, verbose: bool) -> None:
    """Encode SENTENCE with EXPORT_DIR/saved_model and show the conversion's parity figures.

    The SavedModel is loaded with tf.saved_model.load alone (after importing tensorflow_text,
    which registers the SentencePiece ops): its string_encoder signature tokenizes the text with
    BOS/EOS and runs the encoder.
    """

    def work() -> None:
        tryout = try_export(export_dir, sentence)
        logger.info("sentence: %r", tryout.sentence)
        logger.info("token ids (with <s> and </s>): %s", tryout.token_ids)
        logger.info(
            "encoder output: shape %s, first values %s", tryout.output_shape, tryout.first_values
        )
        for name, diff in tryout.parity.items():
            logger.info("parity proven at conversion: %-28s max |diff| vs PyTorch %.2e", name, diff)

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
