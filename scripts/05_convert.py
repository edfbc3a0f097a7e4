"""Stage 05: convert a fastai language model (.pth) into Keras weights and a TF SavedModel, or a
fastai text classifier (stage 08) into a task directory."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ulmfit_core.quiet_tf import quiet_tensorflow

# TensorFlow prints its C++ start-up log lines while it is first imported: here, quieted.
with quiet_tensorflow(sys.argv[1:]):
    import tensorflow  # noqa: F401

from convert.pipeline import ConvertConfig, ConvertSummary, convert, output_size
from convert.verify import DEFAULT_TOLERANCE
from ulmfit_core.cli import run_stage, verbose_option

logger = logging.getLogger("05_convert")


def _summary_line(summary: ConvertSummary) -> str:
    config = summary.config
    if summary.task is not None:
        task = summary.task
        parity = (
            f"max |diff| of the probabilities vs fastai's forward: "
            f"{summary.reports['keras'].max_abs_diff:.2g} (Keras), "
            f"{summary.reports['reloaded'].max_abs_diff:.2g} (reloaded)"
            if summary.verified
            else "NOT verified (--no-verify)"
        )
        return (
            f"{summary.layout}: {len(task['labels'])} labels, {config.n_layers} layers, keep "
            f"{task['keep']} (bptt {task['bptt']}, max_len {task['max_len']}); {parity}; "
            f"{output_size(summary.out_path) / 2**20:.1f} MiB in {summary.seconds['total']:.1f} s "
            f"-> {summary.out_path}"
        )
    sizes = f"{config.n_layers}x{config.hidden_size}" if config.n_layers > 1 else "1"
    head = "tied" if config.tie_weights else "untied"
    if summary.verified:
        keras = summary.reports["keras"]
        saved = summary.reports["saved_model"]
        parity = (
            f"max |diff| vs PyTorch: encoder {keras.encoder_max_abs_diff:.2g}, logits "
            f"{keras.logits_max_abs_diff:.2g} (Keras), {saved.max_abs_diff:.2g} (SavedModel)"
        )
    else:
        parity = "NOT verified (--no-verify)"
    return (
        f"{summary.layout}: vocab {config.vocab_size}, emb {config.emb_size}, {sizes} "
        f"{config.arch}, {head} decoder; {parity}; {output_size(summary.out_path) / 2**20:.1f} "
        f"MiB in {summary.seconds['total']:.1f} s -> {summary.out_path}"
    )


@click.command()
@click.option(
    "--pretrained-model",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="fastai .pth (Learner.save file or bare state dict); its .json sidecar is read when "
    "present.",
)
@click.option(
    "--spm-model-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The SentencePiece .model the LM was trained with.",
)
@click.option(
    "--out-path",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (written beside, renamed at the end).",
)
@click.option(
    "--fixed-seq-len",
    type=click.IntRange(min=2),
    default=None,
    help="Static sequence length of the SavedModel (pad 1 / cut); unset: dynamic length.",
)
@click.option(
    "--qrnn/--awd-lstm",
    "qrnn",
    default=None,
    help="Assert the architecture (it is read from the file; a contradiction is an error).",
)
@click.option(
    "--num-recurrent-layers",
    type=click.IntRange(min=1),
    default=None,
    help="Assert the number of recurrent layers (read from the file).",
)
@click.option(
    "--keep",
    type=click.Choice(["last", "first"]),
    default=None,
    help="Classifiers only: how long texts are pooled. 'last' (the default): as fastai, the "
    "encoder reads the whole text and the pooling covers its last chunks within max_len; "
    "'first': texts are cut to max_len tokens from the front and pooled whole.",
)
@click.option(
    "--max-seq-len",
    type=click.IntRange(min=3),
    default=None,
    help="Classifiers only: the longest input (tokens) the task directory reads before cutting, "
    "a memory bound. Default: 4 x max_len with --keep last, max_len with --keep first.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--no-verify", is_flag=True, help="Skip the parity checks against PyTorch.")
@click.option(
    "--tolerance",
    type=float,
    default=DEFAULT_TOLERANCE,
    show_default=True,
    help="Max |diff| allowed between Keras/SavedModel and PyTorch outputs.",
)
@verbose_option
def main(
    pretrained_model: Path,
    spm_model_file: Path,
    out_path: Path,
    fixed_seq_len: int | None,
    qrnn: bool | None,
    num_recurrent_layers: int | None,
    keep: str | None,
    max_seq_len: int | None,
    overwrite: bool,
    no_verify: bool,
    tolerance: float,
    verbose: bool,
) -> None:
    """Convert PRETRAINED_MODEL into OUT_PATH: keras_weights/, saved_model/, spm_model/,
    fastai_model/ and config.json. A fastai text classifier (stage 08: get_text_classifier keys,
    a sidecar with a "classifier" object) becomes a task directory instead: model.keras,
    task.json and spm.model, as stage 10 writes them, ready for stage 13.

    The architecture and sizes are read from the state dict (and the .json sidecar). Unless
    --no-verify, the Keras model and the reloaded SavedModel are run against the PyTorch forward
    on random ids and real sentences, layer by layer; a max |diff| above --tolerance is an error
    and leaves no output directory.
    """

    def work() -> ConvertSummary:
        config = ConvertConfig(
            pretrained_model=pretrained_model,
            spm_model_file=spm_model_file,
            out_path=out_path,
            fixed_seq_len=fixed_seq_len,
            qrnn=qrnn,
            num_recurrent_layers=num_recurrent_layers,
            keep=keep,
            max_seq_len=max_seq_len,
            overwrite=overwrite,
            verify=not no_verify,
            tolerance=tolerance,
        )
        summary = convert(config)
        times = ", ".join(
            f"{name} {secs:.1f} s" for name, secs in summary.seconds.items() if name != "total"
        )
        logger.info("time: %s", times)
        logger.info("%s", _summary_line(summary))
        return summary

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
