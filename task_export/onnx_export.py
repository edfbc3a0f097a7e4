"""The ONNX artifact: ids + mask in, any batch and length, the numeric outputs out.

Two converters, picked per model, both checked against the Keras model at export
(:mod:`task_export.parity`):

* ``torch.onnx`` over :class:`~task_export.torch_reference.TorchTaskModel` for an AWD-LSTM task
  the torch reference rebuilds: ``nn.LSTM`` becomes ONNX's own ``LSTM`` op, one kernel for the
  whole sequence. tf2onnx does not recognise Keras 3's LSTM loop and emits a ``Loop`` whose
  body is ~20 small ops per step, 3x slower on a short sentence.
* ``tf2onnx`` over the serving module's ``serving_ids`` for the rest (``from_hub`` backbones,
  taggers). A QRNN's forget-mult loop is one tf2onnx cannot convert ("couldn't find scan output
  index"), so a QRNN's ONNX is converted from :meth:`TaskGraph.static_functions`: a fixed
  length (``--tflite-seq-len``), the scan unrolled.

Padding is after the tokens (``mask`` 0 there): the forward recurrences never carry it into a
valid step, and the heads mask it out, so no ``sequence_lens`` is needed.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from task_export.graph import TaskGraph
from task_export.layout import IDS_INPUT, MASK_INPUT

logger = logging.getLogger(__name__)

__all__ = ["ONNX_OPSET", "write_onnx", "write_onnx_int8"]

ONNX_OPSET = 17


def write_onnx(graph: TaskGraph, path: Path, seq_len: int) -> dict[str, object]:
    """Write ``path``; returns ``{"converter": ..., "ops": [ONNX op types]}`` for the report
    (and ``seq_len`` when the file is fixed to it, see :func:`_export_tf`)."""
    import onnx

    reference = _torch_reference(graph)
    if reference is not None:
        _export_torch(reference, graph, path)
        converter = "torch.onnx (native LSTM op)"
    else:
        fixed = _export_tf(graph, path, seq_len)
        converter = "tf2onnx" if fixed is None else f"tf2onnx (fixed length {fixed})"
    proto = onnx.load(str(path))
    return {"converter": converter, "ops": sorted({node.op_type for node in proto.graph.node})}


def write_onnx_int8(ids_model: Path, path: Path) -> dict[str, object]:
    """``ids_model`` with dynamic-range int8 weights (onnxruntime's ``quantize_dynamic``: the
    ``LSTM`` op becomes ``DynamicQuantizeLSTM``, a ``MatMul`` over weights ``MatMulInteger``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(ids_model, path, weight_type=QuantType.QInt8)
    proto = onnx.load(str(path))
    ops = sorted({node.op_type for node in proto.graph.node})
    return {"converter": "onnxruntime quantize_dynamic (int8 weights)", "ops": ops}


def _torch_reference(graph: TaskGraph):
    if getattr(graph.model.backbone, "arch", None) != "awd-lstm" or graph.kind == "tagger":
        return None  # the torch QRNN's forget-mult is a Python loop: tracing would fix the length
    from task_export.torch_reference import TorchTaskModel

    try:
        return TorchTaskModel.from_keras(graph.model, graph.task)
    except ValueError as error:  # e.g. a from_hub backbone: tf2onnx converts it instead
        logger.info("ONNX through tf2onnx: %s", error)
        return None


def _export_torch(reference, graph: TaskGraph, path: Path) -> None:
    import torch

    from ulmfit_core.ids import PAD_ID

    names = [name for name in graph.output_names if name not in ("label", "tokens")]

    class OnnxTask(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.reference = reference

        def forward(self, token_ids, mask):
            ids = torch.where(mask > 0, token_ids, torch.full_like(token_ids, PAD_ID))
            out = self.reference(ids)
            if "logits" in out:  # no softmax: the other artifacts call it probabilities too
                out["probabilities"] = out.pop("logits")
            return tuple(out[name] for name in names)

    # Traced without padding: the exported graph then runs the plain LSTM over the whole batch
    # (see the module docstring), not pack/unpack.
    example = torch.full((2, 5), 4, dtype=torch.int32)
    per_position = {0: "batch", 1: "length"}
    dynamic = {IDS_INPUT: per_position, MASK_INPUT: per_position}
    dynamic |= {name: per_position if name == "token_weights" else {0: "batch"} for name in names}
    with warnings.catch_warnings():
        # The tracer's notes on shape checks and LSTM batch sizes: parity at export runs the
        # file on other batch sizes and lengths than the trace's.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*LSTM.*", category=UserWarning)
        torch.onnx.export(
            OnnxTask().eval(),
            (example, torch.ones_like(example)),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[IDS_INPUT, MASK_INPUT],
            output_names=names,
            dynamic_axes=dynamic,
        )


def _export_tf(graph: TaskGraph, path: Path, seq_len: int) -> int | None:
    """tf2onnx over the dynamic-length graph; where tf2onnx cannot convert its loop (the
    QRNN's forget-mult scan), over the static one at ``seq_len`` (returned then)."""
    import tf2onnx

    if not logger.isEnabledFor(logging.DEBUG):  # its optimizer logs a line per pass
        logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    fixed = seq_len if graph.has_qrnn else None
    module = graph.static_functions(seq_len) if fixed else graph.serving_module()
    function = module.serving_ids
    proto, _ = tf2onnx.convert.from_function(
        function, input_signature=function.input_signature, opset=ONNX_OPSET
    )
    path.write_bytes(proto.SerializeToString())
    return fixed
