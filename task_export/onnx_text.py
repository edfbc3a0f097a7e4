"""The strings-in ONNX artifact: ``model.onnx`` behind onnxruntime-extensions' SentencePiece op.

``model_text.onnx`` takes ``text`` (a batch of strings) and returns what the SavedModel's
``serving_default`` returns for a classifier or regressor: the numeric outputs, ``label`` and
``tokens``. The graph in front of ``model.onnx``:

* ``SentencepieceTokenizer`` (domain ``ai.onnx.contrib``, the model proto as its attribute) with
  BOS and EOS: flat ids and row splits, the ids SentencePiece's own encoder gives;
* padding to the batch's longest row (at most ``max_seq_len``; a fixed-length ``model.onnx``,
  a QRNN's, gets its length) by gathers and a ``Where``, the mask beside it;
* after the model: ``label`` and ``tokens`` gathered from string tables (``""`` for padding).

Running it needs ``onnxruntime_extensions`` registered in the session (see
:func:`task_export.runtimes.load_onnx`). Taggers split words first, which this graph does not:
their ONNX stays ids-in.
"""

from __future__ import annotations

from pathlib import Path

from task_export.graph import TaskGraph
from task_export.layout import IDS_INPUT, MASK_INPUT, ONNX_CONTRIB_DOMAIN, TEXT_INPUT
from ulmfit_core.ids import PAD_ID

__all__ = ["write_onnx_text"]


def write_onnx_text(graph: TaskGraph, ids_model: Path, path: Path) -> dict[str, object]:
    """``ids_model`` (``model.onnx``) with the tokenizer in front, written to ``path``."""
    import onnx
    from onnx import compose

    from task_export.runtimes import onnx_seq_len

    model = onnx.load(str(ids_model))
    pre = _tokenizer_graph(graph, onnx_seq_len(ids_model), model)
    merged = compose.merge_models(
        pre, model, io_map=[(IDS_INPUT, IDS_INPUT), (MASK_INPUT, MASK_INPUT)]
    )
    _add_string_outputs(graph, merged.graph)
    onnx.checker.check_model(merged)
    path.write_bytes(merged.SerializeToString())
    ops = sorted({node.op_type for node in merged.graph.node})
    return {"converter": "model.onnx + onnxruntime-extensions SentencepieceTokenizer", "ops": ops}


def _tokenizer_graph(graph: TaskGraph, fixed: int | None, model):
    from onnx import TensorProto, helper

    def const(name: str, value, dtype=TensorProto.INT64, dims=(1,)):
        return helper.make_node(
            "Constant", [], [name], value=helper.make_tensor(name, dtype, list(dims), [value])
        )

    scalar = ()
    nodes = [
        const("nbest", 0),
        const("alpha", 0.0, TensorProto.FLOAT),
        const("add_bos", True, TensorProto.BOOL),
        const("add_eos", True, TensorProto.BOOL),
        const("reverse", False, TensorProto.BOOL),
        helper.make_node(
            "SentencepieceTokenizer",
            [TEXT_INPUT, "nbest", "alpha", "add_bos", "add_eos", "reverse"],
            ["flat_ids", "splits"],
            domain=ONNX_CONTRIB_DOMAIN,
            model=graph.spm_bytes,
        ),
        const("zero", 0),
        const("one", 1),
        const("minus_one", -1),
        const("end", 2**62),
        const("one_scalar", 1, dims=scalar),
        const("zero_scalar", 0, dims=scalar),
        helper.make_node("Slice", ["splits", "zero", "minus_one"], ["starts"]),
        helper.make_node("Slice", ["splits", "one", "end"], ["ends"]),
        helper.make_node("Sub", ["ends", "starts"], ["lengths"]),
    ]
    if fixed:
        nodes.append(const("length", fixed, dims=scalar))
    else:  # the batch's longest row, at least 1, at most max_len
        nodes += [
            helper.make_node("ReduceMax", ["lengths"], ["longest"], keepdims=0),
            const("max_len", graph.max_len, dims=scalar),
            helper.make_node("Max", ["longest", "one_scalar"], ["at_least_one"]),
            helper.make_node("Min", ["at_least_one", "max_len"], ["length"]),
        ]
    nodes += [
        helper.make_node("Range", ["zero_scalar", "length", "one_scalar"], ["positions"]),
        helper.make_node("Unsqueeze", ["positions", "zero"], ["positions_row"]),
        helper.make_node("Unsqueeze", ["lengths", "one"], ["lengths_column"]),
        helper.make_node("Unsqueeze", ["starts", "one"], ["starts_column"]),
        helper.make_node("Less", ["positions_row", "lengths_column"], ["valid"]),
        helper.make_node("Add", ["starts_column", "positions_row"], ["unclipped"]),
        helper.make_node("Size", ["flat_ids"], ["n_ids"]),
        helper.make_node("Sub", ["n_ids", "one_scalar"], ["last_unclipped"]),
        helper.make_node("Max", ["last_unclipped", "zero_scalar"], ["last"]),
        helper.make_node("Min", ["unclipped", "last"], ["index"]),
        helper.make_node("Gather", ["flat_ids", "index"], ["gathered"]),
        const("pad", PAD_ID, TensorProto.INT32, scalar),
        helper.make_node("Where", ["valid", "gathered", "pad"], [IDS_INPUT]),
        helper.make_node("Cast", ["valid"], [MASK_INPUT], to=TensorProto.INT32),
    ]
    _scope(nodes, "tokenizer/", keep={TEXT_INPUT, IDS_INPUT, MASK_INPUT})
    text = helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch"])
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "length"])
        for name in (IDS_INPUT, MASK_INPUT)
    ]
    pre = helper.make_graph(nodes, "tokenizer", [text], outputs)
    opsets = [*model.opset_import, helper.make_opsetid(ONNX_CONTRIB_DOMAIN, 1)]
    return helper.make_model(pre, opset_imports=opsets, ir_version=model.ir_version)


def _add_string_outputs(graph: TaskGraph, onnx_graph) -> None:
    """``tokens`` (and a classifier's ``label``) appended to the merged graph's outputs."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def table(name: str, values: list[str]):
        array = np.array([v.encode("utf-8") for v in values], dtype=object)
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))

    blank = len(graph.pieces)  # the "" after the pieces: a padding position's token
    nodes = [
        table("piece_table", [*graph.pieces, ""]),
        helper.make_node(
            "Constant",
            [],
            ["blank"],
            value=helper.make_tensor("blank", TensorProto.INT32, [], [blank]),
        ),
        helper.make_node("Cast", [MASK_INPUT], ["mask_bool"], to=TensorProto.BOOL),
        helper.make_node("Where", ["mask_bool", IDS_INPUT, "blank"], ["piece_index"]),
        helper.make_node("Gather", ["piece_table", "piece_index"], ["tokens"]),
    ]
    outputs = [helper.make_tensor_value_info("tokens", TensorProto.STRING, ["batch", "length"])]
    if graph.kind == "classifier":
        nodes += [
            table("label_table", graph.labels),
            helper.make_node("ArgMax", ["probabilities"], ["best"], axis=-1, keepdims=0),
            helper.make_node("Gather", ["label_table", "best"], ["label"]),
        ]
        outputs.append(helper.make_tensor_value_info("label", TensorProto.STRING, ["batch"]))
    _scope(nodes, "strings/", keep={IDS_INPUT, MASK_INPUT, "probabilities", "tokens", "label"})
    onnx_graph.node.extend(nodes)
    onnx_graph.output.extend(outputs)


def _scope(nodes, prefix: str, keep: set[str]) -> None:
    """Prefix the nodes' own tensor names, so that they never collide with the model's."""
    for node in nodes:
        node.input[:] = [name if name in keep else prefix + name for name in node.input]
        node.output[:] = [name if name in keep else prefix + name for name in node.output]
        for attribute in node.attribute:  # a Constant's tensor is named after its output
            if attribute.name == "value":
                attribute.t.name = node.output[0]
