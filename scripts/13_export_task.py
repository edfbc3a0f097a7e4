"""Stage 13: export a trained task directory for serving: SavedModel, TFLite, ONNX (+ int8).

Reads OUT (what stages 10/11/12 write: model.keras, task.json, spm.model) and writes EXPORT
atomically: saved_model/ (strings in, tokenizer in the graph), model.tflite and
model_int8.tflite (one string per call, builtin ops plus tensorflow_text's SentencePiece op,
and for a tagger its whitespace tokenizer), model.onnx and model_int8.onnx (ids + mask in),
model_text.onnx (strings in, onnxruntime-extensions; not for taggers), labels.txt, spm.model
and report.json. Every artifact is run by its own runtime on the validation texts (--test-tsv, or
a tagger's --test-jsonl) and a few probe texts and compared with the Keras model; a float
artifact that differs by more than 1e-5 fails the export and nothing is left behind.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ulmfit_core.quiet_tf import quiet_tensorflow

# TensorFlow prints its C++ start-up log lines while it is first imported: here, quieted.
with quiet_tensorflow(sys.argv[1:]):
    import tensorflow  # noqa: F401

from task_export.layout import FORMATS
from task_export.pipeline import example_predictions, export_task, summary_line
from task_export.tagger_parity import read_tagged_texts
from ulmfit_core.cli import run_stage, verbose_option
from ulmfit_core.errors import InputError
from ulmfit_tasks.data import read_tsv

logger = logging.getLogger("13_export_task")


@click.command(help=__doc__)
@click.option(
    "--task-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="A trained task directory (the --out-path of stage 10, 11 or 12).",
)
@click.option(
    "--out-path",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The export directory to write (replaced if it exists).",
)
@click.option(
    "--formats",
    default=",".join(FORMATS),
    show_default=True,
    help="Comma-separated artifacts to write, a subset of the default.",
)
@click.option(
    "--tflite-seq-len",
    type=int,
    default=None,
    help="The most tokens the TFLite models read of a text, a longer one is cut (default: "
    "the task's max_seq_len). TFLite takes one text per call.",
)
@click.option(
    "--allow-flex",
    is_flag=True,
    help="Write TFLite files even if they need Select-TF (Flex) ops, which phones lack.",
)
@click.option(
    "--test-tsv",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Validation texts (and golds) for the parity checks and the accuracy report.",
)
@click.option("--data-column-name", default="sentence", show_default=True, help="Text column.")
@click.option(
    "--gold-column-name",
    default=None,
    help="Gold column of --test-tsv: accuracy (or MAE) is then reported per artifact.",
)
@click.option(
    "--test-jsonl",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A tagger's validation sentences with gold tags, as stage 12 reads them (CoNLL "
    "as JSONL: one [[word, tag_id], ...] list per line): word accuracy and entity F1 are then "
    "reported per artifact.",
)
@verbose_option
def main(
    task_dir: Path,
    out_path: Path,
    formats: str,
    tflite_seq_len: int | None,
    allow_flex: bool,
    test_tsv: Path | None,
    data_column_name: str,
    gold_column_name: str | None,
    test_jsonl: Path | None,
    verbose: bool,
) -> None:
    def work() -> None:
        texts = golds = None
        if test_jsonl is not None and test_tsv is not None:
            raise InputError("--test-jsonl and --test-tsv: give one set of validation texts")
        if test_jsonl is not None:
            texts, golds = read_tagged_texts(task_dir, test_jsonl)
        elif test_tsv is not None:
            examples = read_tsv(test_tsv, data_column_name, gold_column_name or data_column_name)
            texts = list(examples.texts)
            golds = list(examples.golds) if gold_column_name else None
        result = export_task(
            task_dir,
            out_path,
            formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
            tflite_seq_len=tflite_seq_len,
            allow_flex=allow_flex,
            texts=texts,
            golds=golds,
        )
        logger.info("exported %s", summary_line(result))
        example = texts[0] if texts else "a clever blend of fact and fiction ."
        for line in example_predictions(result, example):
            click.echo(line)

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
