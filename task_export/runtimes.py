"""Each exported artifact loaded with its own runtime, as a deployment would load it.

* SavedModel: ``tf.saved_model.load`` after ``import tensorflow_text`` (the tokenizer op);
* TFLite: the LiteRT interpreter (``ai-edge-litert``), with only builtin ops plus the
  ``TFText>FastSentencepieceTokenize`` custom op (and a tagger's word splitter,
  ``TFText>WhitespaceTokenizeWithOffsetsV2``), registered from tensorflow_text's registrar;
* ONNX: ``onnxruntime`` on the CPU.

Every runner maps ``{input name: array}`` to ``{output name: array}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from task_export.layout import IDS_INPUT, MASK_INPUT, ONNX_CONTRIB_DOMAIN
from ulmfit_core.ids import PAD_ID

__all__ = ["load_onnx", "load_saved_model", "load_tflite", "onnx_seq_len", "tflite_ops"]

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
        custom_op_registerers=[
            tflite_registrar.AddFastSentencepieceTokenize,
            tflite_registrar.AddWhitespaceTokenize,
        ],
        num_threads=num_threads,
    )


def load_tflite(path: str | os.PathLike, num_threads: int | None = None) -> Runner:
    """``runner(text=np.array([...], dtype=object))`` of the model's ``serving_default``.

    The stage-13 files take one text per call (:meth:`TaskGraph.tflite_module`); the runner
    calls them text by text and stacks the rows, post-padding the per-token outputs (``0``,
    ``""``) to the longest, so that it answers a batch as the SavedModel does."""
    interpreter = _tflite_interpreter(path, num_threads)
    runner = interpreter.get_signature_runner("serving_default")
    one_at_a_time = [list(d["shape"]) for d in runner.get_input_details().values()] == [[1]]

    def call(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in runner(**arrays).items()}

    def run(**inputs) -> dict[str, np.ndarray]:
        arrays = {name: _tflite_array(value) for name, value in inputs.items()}
        if not one_at_a_time:
            return call(arrays)
        (name, texts), *_ = arrays.items()
        rows = [call({name: texts[i : i + 1]}) for i in range(len(texts))]
        return {key: _stack([row[key] for row in rows]) for key in rows[0]} if rows else {}

    return run


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    """``(1, ...)`` arrays of different lengths -> one ``(n, ...)`` array, post-padded."""
    shape = np.max([row.shape for row in rows], axis=0)
    strings = rows[0].dtype.kind in "OSU"  # as objects: rows' fixed-width dtypes differ
    dtype = object if strings else rows[0].dtype
    out = np.full((len(rows), *shape[1:]), b"" if strings else 0, dtype=dtype)
    for i, row in enumerate(rows):
        out[(i, *(slice(0, n) for n in row.shape[1:]))] = row[0]
    return out


def _tflite_array(value) -> np.ndarray:
    array = np.asarray(value)
    return array.astype(object) if array.dtype.kind in "US" else array


def tflite_ops(path: str | os.PathLike) -> list[str]:
    """The op names a ``.tflite`` file runs (builtin names, or ``NAME`` of a custom op)."""
    interpreter = _tflite_interpreter(path, 1)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def load_onnx(path: str | os.PathLike, num_threads: int | None = None) -> Runner:
    """``runner(token_ids=..., mask=...)`` of an ONNX model on onnxruntime's CPU provider; a
    fixed-length model (:func:`onnx_seq_len`) gets shorter inputs post-padded to its length.

    ``model_text.onnx`` (``runner(text=...)``) gets onnxruntime-extensions' kernels registered.
    Its SentencePiece kernel crashes a process in which TensorFlow runs: run it in one without
    (:mod:`task_export.isolated`)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    if _uses_extensions(path):
        import onnxruntime_extensions

        options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    session = onnxruntime.InferenceSession(
        str(Path(path)), options, providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    if session.get_inputs()[0].type == "tensor(string)":
        return lambda **inputs: dict(zip(names, session.run(names, inputs), strict=True))
    length = session.get_inputs()[0].shape[1]
    fixed = length if isinstance(length, int) else None

    def run(**inputs) -> dict[str, np.ndarray]:
        feeds = {name: np.asarray(value, dtype=np.int32) for name, value in inputs.items()}
        if fixed is not None:
            padding = ((0, 0), (0, fixed - feeds[IDS_INPUT].shape[1]))
            feeds = {
                name: np.pad(value, padding, constant_values=0 if name == MASK_INPUT else PAD_ID)
                for name, value in feeds.items()
            }
        return dict(zip(names, session.run(names, feeds), strict=True))

    return run


def _uses_extensions(path: str | os.PathLike) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(opset.domain == ONNX_CONTRIB_DOMAIN for opset in model.opset_import)


def onnx_seq_len(path: str | os.PathLike) -> int | None:
    """The fixed sequence length of an ONNX model's inputs, ``None`` for any length."""
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape
    return dim.dim[1].dim_value or None
