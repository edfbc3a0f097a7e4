"""Stage 02: train a SentencePiece model with fastai's special ids."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pretraining_utils.spm import MODEL_TYPES, SpmConfig, build_spm
from ulmfit_core.cli import run_stage, verbose_option

logger = logging.getLogger("02_build_spm")


@click.command()
@click.option(
    "--corpus-path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training text, one sentence per line (stage 01's output).",
)
@click.option(
    "--vocab-size",
    required=True,
    type=int,
    help="Pieces in the model, the 4 special ones included; names the files (35000 -> -sp35k).",
)
@click.option(
    "--model-prefix",
    required=True,
    type=click.Path(path_type=Path),
    help="Output prefix, e.g. runs/demo/spm/spm; missing directories are created.",
)
@click.option(
    "--model-type",
    type=click.Choice(MODEL_TYPES),
    default="unigram",
    show_default=True,
    help="SentencePiece algorithm.",
)
@click.option(
    "--character-coverage",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    help="Share of characters the model must cover (default: sentencepiece's 0.9995).",
)
@click.option(
    "--input-sentence-size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Train on this many randomly sampled lines; 0 uses every line.",
)
@click.option(
    "--num-threads",
    type=click.IntRange(min=1),
    default=None,
    help="Trainer threads (default: all cores).",
)
@verbose_option
def main(
    corpus_path: Path,
    vocab_size: int,
    model_prefix: Path,
    model_type: str,
    character_coverage: float | None,
    input_sentence_size: int,
    num_threads: int | None,
    verbose: bool,
) -> None:
    """Train a SentencePiece model on CORPUS_PATH and write PREFIX-spNk.model, .vocab and .json.

    Ids 0-3 are <unk>, <pad>, <s>, </s>, as fastai expects. The .json sidecar records the
    arguments, the corpus sha256 and the library versions. Files are written atomically, the
    .model last. With --verbose, sentencepiece's own log is shown too.
    """
    config = SpmConfig(
        corpus_path=corpus_path,
        vocab_size=vocab_size,
        model_prefix=model_prefix,
        model_type=model_type,
        character_coverage=character_coverage,
        input_sentence_size=input_sentence_size,
        num_threads=num_threads,
    )

    def work():
        summary = build_spm(config)
        logger.info(
            "spm: %d-piece %s model from %d lines of %s (sha256 %s) in %.1f s",
            summary.vocab_size,
            summary.model_type,
            summary.corpus_lines,
            corpus_path,
            summary.corpus_sha256[:12],
            summary.seconds,
        )
        logger.info("wrote %s, %s, %s", summary.model_path, summary.vocab_path, summary.json_path)
        return summary

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
