"""Stage 01 CLI: raw text -> one sentence per line (see ``main``'s docstring)."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pretraining_utils.cleanup import CleanupConfig, CleanupSummary, cleanup_corpus
from pretraining_utils.parallel import default_workers
from pretraining_utils.punkt_seeds import PUNKT_LANGUAGES
from pretraining_utils.text_units import INPUT_FORMATS, input_size
from ulmfit_core.cli import run_stage, verbose_option


def _run(config: CleanupConfig) -> CleanupSummary:
    # The progress bar counts input bytes; its total is unknown for stdin. disable=None hides
    # it when stderr is not a terminal, so batch logs hold only the log lines.
    with (
        logging_redirect_tqdm(),
        tqdm(
            total=input_size(config.input_text),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="cleanup",
            disable=None,
        ) as bar,
    ):
        return cleanup_corpus(config, on_bytes=bar.update)


@click.command()
@click.option(
    "--input-text",
    required=True,
    type=click.Path(exists=True, allow_dash=True, path_type=Path),
    help="Raw text: a file, a directory of *.txt files (recursive, sorted), or - for stdin.",
)
@click.option(
    "--out-path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sentences file to write, one sentence per line.",
)
@click.option(
    "--lang",
    default="english",
    show_default=True,
    metavar="LANG",
    type=click.Choice(PUNKT_LANGUAGES, case_sensitive=False),
    help=f"Language of the text, for Punkt and its abbreviations: {', '.join(PUNKT_LANGUAGES)}.",
)
@click.option(
    "--workers",
    default=default_workers,
    show_default="all cores",
    type=click.IntRange(min=1),
    help="Worker processes; the output does not depend on it.",
)
@click.option(
    "--input-format",
    default="auto",
    show_default=True,
    type=click.Choice(INPUT_FORMATS, case_sensitive=False),
    help="How lines make up the text that is split into sentences. lines: each line is one "
    "paragraph or sentence (Wikipedia dumps, one sentence per line); a sentence never spans "
    "two lines. paragraphs: hard-wrapped text (books, e-mail, man pages, RST/Markdown); lines "
    "are joined with a space up to a blank line. auto: decide from the head of the input and "
    "log why.",
)
@click.option("--lowercase", is_flag=True, help="Lower-case the sentences (after splitting).")
@click.option(
    "--min-words",
    default=1,
    show_default=True,
    type=click.IntRange(min=0),
    help="Drop (and count) sentences with fewer words, after punctuation spacing.",
)
@click.option(
    "--max-words",
    default=None,
    type=click.IntRange(min=1),
    help="Drop (and count) sentences with more words.  [default: no limit]",
)
@click.option(
    "--punkt-params",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Punkt parameters (a .punkt.json from an earlier run) to use instead of training.",
)
@verbose_option
def main(
    input_text: Path,
    out_path: Path,
    lang: str,
    workers: int,
    input_format: str,
    lowercase: bool,
    min_words: int,
    max_words: int | None,
    punkt_params: Path | None,
    verbose: bool,
) -> None:
    """Clean a raw text corpus and split it into sentences, one per line.

    Each input line is a paragraph, or, for hard-wrapped text, lines are joined into paragraphs at
    blank lines (--input-format). Text is decoded as UTF-8 (invalid bytes are replaced and
    counted), NFKC-normalised, split into sentences by nltk's Punkt (trained on the head of the
    input, seeded with built-in abbreviations for the language), and punctuation is spaced off the
    words. The Punkt parameters used are saved as OUT_PATH.punkt.json; pass them to --punkt-params
    to split another corpus the same way.
    """
    run_stage(
        lambda: _run(
            CleanupConfig(
                input_text=input_text,
                out_path=out_path,
                lang=lang,
                workers=workers,
                input_format=input_format,
                lowercase=lowercase,
                min_words=min_words,
                max_words=max_words,
                punkt_params=punkt_params,
            )
        ),
        verbose,
    )


if __name__ == "__main__":
    main()
