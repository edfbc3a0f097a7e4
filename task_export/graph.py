"""The inference graphs of a trained task: strings in, the task's outputs out.

One :class:`TaskGraph` holds the Keras model, the tokenizer and what ``task.json`` says; it makes

* :meth:`TaskGraph.serving_module`: the serving SavedModel's ``tf.Module`` (signatures
  ``serving_default`` on strings and ``serving_ids`` on ids + mask), padded per batch to its
  longest text (at most ``max_seq_len``), the Keras model's own recurrent loop inside;
* :meth:`TaskGraph.tflite_module`: the same on one text per call, the weights frozen: what
  TFLite converts (builtin ops only; the recurrences become ``WHILE`` loops);
* :meth:`TaskGraph.static_functions`: the same two functions at a fixed sequence length on a
  copy of the model whose recurrences have no control flow (the LSTM unrolled, the QRNN's
  forget-mult as a log-depth scan), weights frozen: what a QRNN's ONNX is converted from
  (:mod:`task_export.onnx_export`).

The tokenizer is tensorflow_text's ``FastSentencepieceTokenizer`` (it has a TFLite kernel):
``<s> pieces </s>``, cut to the first ``length`` ids as ``ulmfit_tasks.data.encode_texts`` cuts.
Padding is done with gathers and selects only (no ragged ops), so it is TFLite's builtins too.
A tagger's strings-in function splits the words and encodes them one by one instead
(:mod:`task_export.tagging`); its ``serving_ids`` also returns ``subword_tag_ids``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import sentencepiece
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from task_export.layout import IDS_INPUT, MASK_INPUT, TEXT_INPUT
from task_export.tagging import WordTokenizer
from ulmfit_core.errors import InputError
from ulmfit_core.ids import PAD_ID
from ulmfit_tasks.task_dir import SPM_FILE, TASK_FILE, load_task_model

__all__ = ["EXPORTABLE_TASKS", "TaskGraph"]

EXPORTABLE_TASKS = ("classifier", "regressor", "tagger")


@dataclass(frozen=True)
class TaskGraph:
    """A trained task directory, ready to be traced (see the module docstring)."""

    task_dir: Path
    task: dict[str, Any]
    model: keras.Model
    spm_bytes: bytes
    pieces: tuple[str, ...]

    @classmethod
    def load(cls, task_dir: Path) -> TaskGraph:
        if not (task_dir / TASK_FILE).is_file():
            raise InputError(f"{task_dir}: no {TASK_FILE}; train a task into it with stage 10/11")
        task = json.loads((task_dir / TASK_FILE).read_text(encoding="utf-8"))
        if task.get("task") not in EXPORTABLE_TASKS:
            raise InputError(
                f"{task_dir} holds a {task.get('task')}; stage 13 exports "
                f"{', '.join(EXPORTABLE_TASKS)} directories"
            )
        spm_bytes = (task_dir / SPM_FILE).read_bytes()
        spm = sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)
        pieces = tuple(spm.id_to_piece(i) for i in range(spm.get_piece_size()))
        return cls(task_dir, task, load_task_model(task_dir, task), spm_bytes, pieces)

    @property
    def kind(self) -> str:
        return self.task["task"]

    @property
    def labels(self) -> list[str]:
        """Class names (classifier), tag names (tagger), none (regressor)."""
        return list(self.task.get("tags" if self.kind == "tagger" else "labels", []))

    @property
    def max_len(self) -> int:
        fixed = self.task.get("fixed_seq_len")
        return min(self.task["max_seq_len"], fixed) if fixed else self.task["max_seq_len"]

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.kind == "regressor":
            return ("score", "tokens")
        if self.kind == "tagger":
            return ("probabilities", "subword_tag_ids", "tags", "subword_tags", "tokens")
        if self.task.get("head") == "attention":
            return ("probabilities", "label", "token_weights", "tokens")
        return ("probabilities", "label", "tokens")

    def serving_module(self) -> tf.Module:
        fixed = self.task.get("fixed_seq_len")
        return _module(self, self.model, fixed, frozen=False)

    @property
    def has_qrnn(self) -> bool:
        return any(hasattr(layer, "forget_mult_impl") for layer in self.model.backbone.layers)

    def tflite_module(self, max_tokens: int) -> tf.Module:
        """What TFLite converts: one text per call, as many recurrent steps as it has tokens
        (at most ``max_tokens``), the weights frozen into constants (TFLite's converter keeps
        Keras 3 variables as resource variables otherwise, and reads them uninitialized).

        One text, because TFLite lowers the recurrences' tensor lists to builtin ops only when
        their element shape, ``(batch, units)``, is static; then the Keras loops become
        ``WHILE`` ops and nothing is unrolled."""
        fixed = self.task.get("fixed_seq_len")
        limit = min(self.max_len, max_tokens)
        return _module(self, self.model, fixed, frozen=True, text_batch=1, max_len=limit)

    def static_functions(self, seq_len: int) -> tf.Module:
        """Strings-in and ids-in functions at ``seq_len``, weights frozen, no control flow."""
        model = load_task_model(self.task_dir, self.task)  # a copy: the switches below stay here
        for layer in model.backbone.layers:
            if isinstance(layer, keras.layers.LSTM):
                layer.unroll = True
            if hasattr(layer, "forget_mult_impl"):
                layer.forget_mult_impl = "log_depth"
        return _module(self, model, seq_len, frozen=True)

    # -- the pieces of the graph ---------------------------------------------------------------

    def numeric_outputs(self, model: keras.Model, ids: tf.Tensor) -> dict[str, tf.Tensor]:
        out = model(ids, training=False)
        if self.kind == "regressor":
            normalizer = self.task["normalizer"]
            return {"score": out[:, 0] * normalizer["std"] + normalizer["mean"]}
        if isinstance(out, dict):
            return {"probabilities": out["predictions"], "token_weights": out["attention_weights"]}
        if self.kind == "tagger":
            best = tf.argmax(out, axis=-1, output_type=tf.int32)
            return {"probabilities": out, "subword_tag_ids": best}
        return {"probabilities": out}

    def string_outputs(self, numeric: dict[str, tf.Tensor], ids, valid) -> dict[str, tf.Tensor]:
        # Padding reads the "" appended to the table: a select on strings is no TFLite builtin.
        table = tf.constant([*self.pieces, ""])
        index = tf.where(valid, ids, tf.constant(len(self.pieces), ids.dtype))
        strings = {"tokens": tf.gather(table, index)}
        if self.kind == "classifier":
            best = tf.argmax(numeric["probabilities"], axis=-1, output_type=tf.int32)
            strings["label"] = tf.gather(tf.constant(self.task["labels"]), best)
        if self.kind == "tagger":
            best = tf.where(valid, numeric["subword_tag_ids"], len(self.labels))
            strings["subword_tags"] = tf.gather(tf.constant([*self.labels, ""]), best)
        return strings


def pad_ids(ragged: tf.RaggedTensor, length) -> tuple[tf.Tensor, tf.Tensor]:
    """``(ids (batch, length) int32 padded with PAD_ID, valid (batch, length) bool)``: the first
    ``length`` ids of each row, by gathers and selects only."""
    values, splits = ragged.flat_values, ragged.row_splits
    starts, lengths = splits[:-1], splits[1:] - splits[:-1]
    positions = tf.range(length, dtype=splits.dtype)[tf.newaxis, :]
    valid = positions < lengths[:, tf.newaxis]
    last = tf.maximum(tf.shape(values, out_type=splits.dtype)[0] - 1, 0)
    index = tf.minimum(starts[:, tf.newaxis] + positions, last)
    ids = tf.where(valid, tf.gather(values, index), tf.constant(PAD_ID, values.dtype))
    return tf.cast(ids, tf.int32), valid


def _module(
    graph: TaskGraph,
    model: keras.Model,
    seq_len: int | None,
    frozen: bool,
    text_batch: int | None = None,
    max_len: int | None = None,
) -> tf.Module:
    """The ``tf.Module`` of ``serving_default`` and ``serving_ids`` (see the module docstring):
    ``seq_len`` fixes the length (``None``: the batch's longest, at most ``max_len``, default
    the task's), ``text_batch`` the number of texts per call (``None``: any)."""
    max_len = max_len or graph.max_len
    tokenizer = tf_text.FastSentencepieceTokenizer(graph.spm_bytes, add_bos=True, add_eos=True)
    words = WordTokenizer(graph.spm_bytes) if graph.kind == "tagger" else None
    ids_spec = tf.TensorSpec([None, seq_len], tf.int32, name=IDS_INPUT)
    mask_spec = tf.TensorSpec([None, seq_len], tf.int32, name=MASK_INPUT)

    def on_ids(token_ids, mask):
        ids = tf.where(mask > 0, token_ids, tf.constant(PAD_ID, tf.int32))
        return graph.numeric_outputs(model, ids)

    def on_text(text):
        if words is not None:
            pieces = words(text)
            lengths, pad = pieces.lengths, pieces.pad
        else:
            ragged = tokenizer.tokenize(text)
            lengths, pad = ragged.row_lengths(), lambda length: pad_ids(ragged, length)
        length = seq_len
        if length is None:  # the batch's longest, at most max_len, at least 1
            longest = tf.maximum(tf.reduce_max(lengths), 1)
            length = tf.minimum(longest, tf.cast(max_len, longest.dtype))
        ids, valid = pad(length)
        numeric = graph.numeric_outputs(model, ids)
        strings = graph.string_outputs(numeric, ids, valid)
        if words is not None:
            strings["tags"] = pieces.word_tags(numeric["subword_tag_ids"], length, graph.labels)
        return {**numeric, **strings}

    text_spec = tf.TensorSpec([text_batch], tf.string, name=TEXT_INPUT)
    text_fn = tf.function(on_text, input_signature=[text_spec])
    ids_fn = tf.function(on_ids, input_signature=[ids_spec, mask_spec])
    module = tf.Module()
    if frozen:
        text_fn, ids_fn = _frozen(text_fn, [text_spec]), _frozen(ids_fn, [ids_spec, mask_spec])
    else:
        module.model_variables = list(model.variables)  # tracked, so the SavedModel holds them
    module.serving_default = text_fn
    module.serving_ids = ids_fn
    return module


def _frozen(
    function: tf.types.experimental.PolymorphicFunction, specs
) -> tf.types.experimental.PolymorphicFunction:
    """``function`` with its variables turned into constants (TFLite's converter keeps Keras 3
    variables as resource variables otherwise, and then reads uninitialized values)."""
    concrete = function.get_concrete_function()
    constants = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs

    def call(*args):
        return tf.nest.pack_sequence_as(structure, constants(*args))

    return tf.function(call, input_signature=specs)
