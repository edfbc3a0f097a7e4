"""Stage 04: pretrain or fine-tune an AWD-LSTM (ULMFiT) or QRNN (MultiFiT) language model."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from ulmfit_core.cli import device_options, run_stage, verbose_option
from ulmfit_core.lm_config import ARCHS

logger = logging.getLogger("04_train_lm")

_INPUT = click.Path(exists=True, path_type=Path)
_UNIT = click.FloatRange(min=0.0, max=1.0, max_open=True)


def _dropout_option(name: str, what: str):
    return click.option(
        f"--{name.replace('_', '-')}",
        type=_UNIT,
        default=None,
        help=f"{what} dropout (default: the arch's, see ulmfit_core/lm_config.py); "
        "scaled by --drop-mult.",
    )


@click.command()
@click.option(
    "--pretokenized-train",
    required=True,
    type=_INPUT,
    help="Training corpus: stage 03's binary corpus directory (preferred) or a text "
    "id file (one line of space-separated ids per sentence; needs --vocab-size).",
)
@click.option(
    "--pretokenized-valid",
    type=_INPUT,
    default=None,
    help="Validation corpus in the same formats. Default: hold out --valid-fraction "
    "of the training lines.",
)
@click.option(
    "--valid-fraction",
    type=click.FloatRange(min=0.0, max=0.5, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Share of training lines held out for validation when there is no "
    "--pretokenized-valid (a fixed pseudo-random subset).",
)
@click.option(
    "--min-seq-len",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Drop lines with fewer tokens, <s> and </s> included (3 drops empty lines of "
    "a bos:eos corpus); the count is logged.",
)
@click.option(
    "--max-seq-len",
    "bptt",
    type=click.IntRange(min=1),
    default=70,
    show_default=True,
    help="Tokens per training window (BPTT).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Parallel token streams per process.",
)
@click.option(
    "--vocab-size",
    type=click.IntRange(min=1),
    default=None,
    help="Vocabulary size. Read from the binary corpus's meta.json when omitted (and "
    "must match it when given); required for text id input.",
)
@click.option(
    "--num-epochs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Epochs in all. Fine-tuning: 1 with the recurrent layers frozen, then the rest unfrozen.",
)
@click.option(
    "--arch",
    type=click.Choice(ARCHS),
    default=None,
    help="Architecture [default: awd-lstm, or the pretrained model's].",
)
@click.option("--qrnn", is_flag=True, help="Same as --arch qrnn (the predecessor's flag).")
@click.option(
    "--emb-size",
    type=click.IntRange(min=1),
    default=None,
    help="Embedding size, also the last layer's [default: 400].",
)
@click.option(
    "--hidden-size",
    type=click.IntRange(min=1),
    default=None,
    help="Hidden size of the other layers [default: 1152 LSTM, 1552 QRNN].",
)
@click.option(
    "--num-hidden-layers",
    "n_layers",
    type=click.IntRange(min=1),
    default=None,
    help="Recurrent layers [default: 3 LSTM, 4 QRNN].",
)
@_dropout_option("input_p", "Input (embedding output)")
@_dropout_option("weight_p", "Weight (LSTM hidden-to-hidden / QRNN linear)")
@_dropout_option("embed_p", "Embedding row")
@_dropout_option("hidden_p", "Between-layer")
@_dropout_option("output_p", "Decoder input")
@click.option(
    "--drop-mult",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Multiplies every dropout (fastai's drop_mult).",
)
@click.option(
    "--pretrain-lr",
    type=click.FloatRange(min=0.0, min_open=True),
    default=5e-3,
    show_default=True,
    help="Peak one-cycle LR for pretraining, and for the frozen first epoch of fine-tuning.",
)
@click.option(
    "--finetune-lr",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Peak one-cycle LR of the unfrozen fine-tuning epochs.",
)
@click.option(
    "--pretrained-model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A .pth to fine-tune (its .json sidecar, when present, gives "
    "the architecture); its vocabulary must match the corpus's.",
)
@click.option(
    "--save-path",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory for EXP.pth, EXP.json, EXP.history.csv (and EXP.ckpt/).",
)
@click.option("--exp-name", required=True, help="Experiment name: the output files' stem.")
@click.option(
    "--lr-find",
    is_flag=True,
    help="Only run fastai's LR finder: log the suggested LR, save EXP.lr_find.png.",
)
@device_options
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from SAVE_PATH/EXP.ckpt if an earlier run left a checkpoint "
    "(same settings required); otherwise start afresh.",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Seed for initialisation, dropout and the per-epoch line order.",
)
@verbose_option
def main(
    qrnn: bool,
    arch: str | None,
    lr_find: bool,
    precision: str | None,
    verbose: bool,
    pretokenized_train: Path,
    pretokenized_valid: Path | None,
    save_path: Path,
    pretrained_model: Path | None,
    **options,
) -> None:
    """Train a language model on PRETOKENIZED_TRAIN and save SAVE_PATH/EXP_NAME.pth.

    Pretraining runs fit_one_cycle(num_epochs, pretrain_lr, moms=(0.8, 0.7, 0.8), div=10) with
    Adam(wd=0.1), gradient clipping 0.1 and AR/TAR regularisation. With --pretrained-model it
    fine-tunes instead. A checkpoint is written after every epoch; --resume continues an
    interrupted run. Outputs: EXP.pth (fastai Learner.save format), EXP.json (the model config
    the converter reads) and EXP.history.csv, written atomically.

    Multi-GPU: torchrun --nproc_per_node N scripts/04_train_lm.py ... (--batch-size is per GPU).
    """
    if qrnn:
        if arch not in (None, "qrnn"):
            raise click.UsageError(f"--qrnn contradicts --arch {arch}")
        arch = "qrnn"

    def work():
        from lm_training.config import TrainConfig
        from lm_training.lr_finder import find_learning_rate
        from lm_training.train import train_language_model

        config = TrainConfig(
            train_path=pretokenized_train,
            valid_path=pretokenized_valid,
            save_path=save_path,
            pretrained_model=pretrained_model,
            arch=arch,
            precision=precision or "fp32",
            progress=sys.stdout.isatty(),
            **options,
        )
        if lr_find:
            found = find_learning_rate(config)
            logger.info(
                "LR finder: suggested learning rate %.3g (valley) in %.1f s; plot: %s",
                found.suggested_lr,
                found.seconds,
                found.plot_path,
            )
            return found
        summary = train_language_model(config)
        if int(os.environ.get("RANK", "0")) == 0:
            final = summary.final
            logger.info(
                "trained %d epoch(s) in %.1f s: valid_loss %.4f, perplexity %.2f -> %s, %s, %s",
                summary.epochs,
                summary.seconds,
                final.get("valid_loss", float("nan")),
                final.get("perplexity", float("nan")),
                summary.paths.model,
                summary.paths.config,
                summary.paths.history,
            )
        return summary

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
