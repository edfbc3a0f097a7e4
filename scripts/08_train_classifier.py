"""Stage 08: fine-tune a fastai ULMFiT (AWD-LSTM) or MultiFiT (QRNN) text classifier."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ulmfit_core.classifier_config import DEFAULT_BPTT, DEFAULT_MAX_LEN
from ulmfit_core.cli import (
    EXISTING_FILE,
    device_options,
    label_map_option,
    run_stage,
    tsv_options,
    verbose_option,
)

logger = logging.getLogger("08_train_classifier")


@click.command()
@tsv_options(gold_help="Column holding the label.")
@label_map_option
@click.option(
    "--spm-model-file",
    required=True,
    type=EXISTING_FILE,
    help="The SentencePiece model the language model was trained with (stage 02's .model).",
)
@click.option(
    "--pretrained-model",
    required=True,
    type=EXISTING_FILE,
    help="Stage 04's language model X.pth (its X.json sidecar, when present, gives the "
    "architecture); its vocabulary must be the SentencePiece model's.",
)
@click.option(
    "--save-path",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory for EXP.pth, EXP.json, EXP.history.csv (and EXP.ckpt/ meanwhile).",
)
@click.option("--exp-name", required=True, help="Experiment name: the output files' stem.")
@click.option(
    "--num-epochs",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Epochs in all: gradual unfreezing, one epoch each with the last 1, 2, 3 layer groups "
    "trained, then the rest with all of them.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0.0, min_open=True),
    default=2e-2,
    show_default=True,
    help="Peak one-cycle LR of the first epoch; then LR/2, LR/4 and LR/20 (fastai's ULMFiT "
    "tutorial), with discriminative rates down to 2.6**4 times lower for the first group.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Texts per batch (batches hold texts of similar lengths).",
)
@click.option(
    "--drop-mult",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    help="Multiplies the classifier's dropouts (fastai's awd_lstm_clas_config), as "
    "fastai's text_classifier_learner.",
)
@click.option(
    "--bptt",
    type=click.IntRange(min=1),
    default=DEFAULT_BPTT,
    show_default=True,
    help="Tokens the encoder reads at a time; longer texts are read in chunks.",
)
@click.option(
    "--max-len",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_LEN,
    show_default=True,
    help="Only the encoder outputs of a text's last MAX_LEN tokens (whole chunks) are pooled.",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Seed for initialisation, dropout and the batch order.",
)
@click.option(
    "--save-best",
    is_flag=True,
    help="Write the weights of the epoch with the best validation accuracy (default: the last "
    "epoch's).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from SAVE_PATH/EXP.ckpt if an earlier run left a checkpoint (same settings "
    "required); otherwise start afresh.",
)
@device_options
@verbose_option
def main(
    train_tsv: Path,
    test_tsv: Path | None,
    data_column_name: str,
    gold_column_name: str,
    spm_model_file: Path,
    precision: str | None,
    verbose: bool,
    **options,
) -> None:
    """Fine-tune a text classifier on TRAIN_TSV from a language model; save SAVE_PATH/EXP.pth.

    The model is fastai's get_text_classifier on the language model's encoder (AWD-LSTM or
    QRNN); the recipe is fastai's text_classifier_learner with ULMFiT's gradual unfreezing
    (fit_one_cycle per phase, moms=(0.8, 0.7, 0.8), Adam(wd=0.1), AR/TAR). Validation accuracy
    is logged per epoch. A checkpoint is written after every epoch; --resume continues an
    interrupted run. Outputs, written atomically: EXP.pth ({'model', 'opt'}, fastai's
    get_text_classifier keys), EXP.json (the encoder's config and the classifier's labels and
    head, which stage 05 converts from) and EXP.history.csv.
    """

    def work():
        from lm_training.classifier_config import ClassifierTrainConfig
        from lm_training.classifier_train import train_text_classifier

        config = ClassifierTrainConfig(
            train_tsv=train_tsv,
            test_tsv=test_tsv,
            data_column=data_column_name,
            gold_column=gold_column_name,
            spm_model=spm_model_file,
            precision=precision or "fp32",
            progress=sys.stdout.isatty(),
            **options,
        )
        summary = train_text_classifier(config)
        saved = summary.saved
        logger.info(
            "trained %d epoch(s) on %d examples (%d for validation) in %.1f s: valid accuracy "
            "%.4f, valid_loss %.4f (epoch %d%s) -> %s, %s, %s",
            summary.epochs,
            summary.n_train,
            summary.n_valid,
            summary.seconds,
            saved.get("accuracy", float("nan")),
            saved.get("valid_loss", float("nan")),
            summary.saved_epoch,
            ", the best" if config.save_best else "",
            summary.paths.model,
            summary.paths.config,
            summary.paths.history,
        )
        return summary

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
