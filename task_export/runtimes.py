"""Each exported artifact loaded with its own runtime, as a deployment would load it.

* SavedModel: ``tf.saved_model.load`` after ``import tensorflow_text`` (the tokenizer op);
* TFLite: the LiteRT interpreter (``ai-edge-litert``), with only builtin ops plus the
  ``TFText>FastSentencepieceTokenize`` custom op, registered from tensorflow_text's registrar;
* ONNX: ``onnxruntime`` on the CPU.

Every runner maps ``{input name: array}`` to ``{output name: array}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["load_onnx", "load_saved_model", "load_tflite", "tflite_ops"]

Runner = Callable[..., dict[str, np.ndarray]]


def load_saved_model(path: str | os.PathLike, signature: str = "serving_default") -> Runner:
    """``runner(text=[...])`` or ``runner(token_ids=..., mask=...)`` of a SavedModel signature."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the SentencePiece op the graph uses

    function = tf.saved_model.load(str(path)).signatures[signature]

    def run(**inputs) -> dict[str, np.ndarray]:
        tensors = {name: tf.constant(value) for name, value in inputs.items()}
        return {name: value.numpy() for name, value in function(**tensors).items()}

    return run


def _tflite_interpreter(path: str | os.PathLike, num_threads: int | None):
    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    from tensorflow_text.core.pybinds import tflite_registrar

    return InterpreterWithCustomOps(
        model_path=str(path),
        custom_op_registerers=[tflite_registrar.AddFastSentencepieceTokenize],
        num_threads=num_threads,
    )


def load_tflite(path: str | os.PathLike, num_threads: int | None = None) -> Runner:
    """``runner(text=np.array([...], dtype=object))`` of the model's ``serving_default``."""
    interpreter = _tflite_interpreter(path, num_threads)
    runner = interpreter.get_signature_runner("serving_default")

    def run(**inputs) -> dict[str, np.ndarray]:
        arrays = {name: _tflite_array(value) for name, value in inputs.items()}
        return {name: np.asarray(value) for name, value in runner(**arrays).items()}

    return run


def _tflite_array(value) -> np.ndarray:
    array = np.asarray(value)
    return array.astype(object) if array.dtype.kind in "US" else array


def tflite_ops(path: str | os.PathLike) -> list[str]:
    """The op names a ``.tflite`` file runs (builtin names, or ``NAME`` of a custom op)."""
    interpreter = _tflite_interpreter(path, 1)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def load_onnx(path: str | os.PathLike, num_threads: int | None = None) -> Runner:
    """``runner(token_ids=..., mask=...)`` of an ONNX model on onnxruntime's CPU provider."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = onnxruntime.InferenceSession(
        str(Path(path)), options, providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]

    def run(**inputs) -> dict[str, np.ndarray]:
        feeds = {name: np.asarray(value, dtype=np.int32) for name, value in inputs.items()}
        return dict(zip(names, session.run(names, feeds), strict=True))

    return run
