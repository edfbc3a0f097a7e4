"""Write the serving SavedModel and the TFLite files (float, int8); ONNX is
:mod:`task_export.onnx_export`'s."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import tensorflow as tf

from task_export.graph import TaskGraph
from task_export.layout import SERVING_SIGNATURE
from task_export.runtimes import tflite_ops
from ulmfit_core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["ALLOWED_CUSTOM_OPS", "write_saved_model", "write_tflite"]

# The tokenizers' kernels (tensorflow_text's TFLite ops: SentencePiece, and the word splitter of
# a tagger); everything else must be a builtin.
ALLOWED_CUSTOM_OPS = ("TFText>FastSentencepieceTokenize", "TFText>WhitespaceTokenizeWithOffsetsV2")


def write_saved_model(graph: TaskGraph, path: Path) -> None:
    module = graph.serving_module()
    tf.saved_model.save(
        module,
        str(path),
        signatures={SERVING_SIGNATURE: module.serving_default, "serving_ids": module.serving_ids},
    )


def write_tflite(module: tf.Module, path: Path, int8: bool, allow_flex: bool) -> list[str]:
    """Convert the module's strings-in function (:meth:`TaskGraph.tflite_module`); returns the
    ops the file runs.

    Raises:
        InputError: a Select-TF (Flex) op or an unknown custom op remains and ``allow_flex`` is
            off (nothing is written then).
    """
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={SERVING_SIGNATURE: module.serving_default})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, [SERVING_SIGNATURE])
        converter.allow_custom_ops = True  # the tokenizer; anything else is refused below
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if allow_flex:
            converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
        flat = converter.convert()
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_bytes(flat)
    ops = tflite_ops(tmp_path)
    # Builtin op names are upper case (FULLY_CONNECTED); Flex ops are FlexNAME.
    foreign = [op for op in ops if not op.isupper() and op not in ALLOWED_CUSTOM_OPS]
    if foreign and not allow_flex:
        tmp_path.unlink()
        raise InputError(
            f"{path.name} would need ops a phone's TFLite runtime lacks: {', '.join(foreign)}; "
            "pass --allow-flex to write it anyway"
        )
    tmp_path.replace(path)
    return ops
