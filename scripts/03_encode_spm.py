"""Stage 03: encode a corpus with a SentencePiece model, as text ids/pieces or a binary corpus."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from tqdm import tqdm

from pretraining_utils.encode import OUTPUT_FORMATS, EncodeConfig, encode_corpus
from ulmfit_core.cli import run_stage, verbose_option

logger = logging.getLogger("03_encode_spm")


@click.command()
@click.option(
    "--corpus-path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="UTF-8 text, one sentence per line (stage 01's output).",
)
@click.option(
    "--model-path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SentencePiece .model from stage 02.",
)
@click.option(
    "--spm-extra-options",
    default="bos:eos",
    show_default=True,
    help="Colon-separated subset of bos, eos, reverse (spm_encode's syntax); '' for none.",
)
@click.option(
    "--output-format",
    type=click.Choice(OUTPUT_FORMATS),
    default="id",
    show_default=True,
    help="id/piece: one line of space-separated tokens per input line; "
    "bin: a memory-mappable corpus directory for training.",
)
@click.option(
    "--save-path",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file (id, piece) or directory (bin).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Encoding threads (default: all cores); the output is the same for any number.",
)
@verbose_option
def main(
    corpus_path: Path,
    model_path: Path,
    spm_extra_options: str,
    output_format: str,
    save_path: Path,
    workers: int | None,
    verbose: bool,
) -> None:
    """Encode CORPUS_PATH line by line with the SentencePiece model MODEL_PATH.

    The id and piece formats print what `spm_encode --extra_options=bos:eos --output_format=id`
    prints: one output line per input line, empty lines included. The bin format writes
    tokens.bin, offsets.bin and meta.json into SAVE_PATH (see pretraining_utils/corpus.py).
    Output is written atomically; on an error nothing is left behind.
    """
    config = EncodeConfig(
        corpus_path=corpus_path,
        model_path=model_path,
        save_path=save_path,
        extra_options=spm_extra_options,
        output_format=output_format,
        workers=workers,
    )

    def work():
        total = corpus_path.stat().st_size if corpus_path.is_file() else None  # or a pipe
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="encode", disable=None
        ) as bar:
            summary = encode_corpus(config, progress=bar.update)
        logger.info(
            "encoded %d lines, %d tokens (%d unk = %.4f%%) in %.1f s (%.2f M tokens/s) -> %s",
            summary.lines,
            summary.tokens,
            summary.unk,
            100 * summary.unk_rate,
            summary.seconds,
            summary.tokens_per_second / 1e6,
            summary.save_path,
        )
        return summary

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
