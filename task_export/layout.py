"""The stage-13 export directory of a trained task: every name in it, defined here only.

``scripts/13_export_task.py`` writes it, ``scripts/14_serve.py`` and the benchmarks read it::

    EXPORT/saved_model/          tf.saved_model, signatures below (load it with
                                 ``import tensorflow_text`` first: the tokenizer is its op)
    EXPORT/model.tflite          float32, one string per call, signature ``serving_default`` (the
                                 tokenizer is tensorflow_text's TFLite custom op; a
                                 tagger's word splitter another one)
    EXPORT/model_int8.tflite     the same with dynamic-range int8 weights
    EXPORT/model.onnx            ids + mask in (``token_ids``, ``mask``, any batch and length,
                                 post-padded), same outputs but the string ones
    EXPORT/model_int8.onnx       the same with dynamic-range int8 weights (onnxruntime's
                                 quantize_dynamic: DynamicQuantizeLSTM, MatMulInteger)
    EXPORT/model_text.onnx       strings in, all outputs: model.onnx behind onnxruntime-
                                 extensions' SentencePiece op (not for taggers)
    EXPORT/labels.txt            class names (classifier) or tag names (tagger), one per line
    EXPORT/spm.model             the SentencePiece model
    EXPORT/report.json           what was exported: task, ops, sizes, parity figures

Outputs by task (every string tensor pads with ``""``; ``T`` = the task's sequence length):

==============  ====================================================================
task            outputs of ``serving_default`` (input ``text``: strings ``(batch,)``)
==============  ====================================================================
classifier      ``probabilities`` (batch, classes) float32, ``label`` (batch,) string;
                attention head also ``token_weights`` (batch, T) float32
regressor       ``score`` (batch,) float32, in label units (normalization undone)
tagger          ``tags`` (batch, W) string, one per word split at ASCII whitespace
                (``task_export.tagging.split_words``; W: the batch's most words, at
                least 1); ``subword_tags`` (batch, T) string, ``subword_tag_ids``
                (batch, T) int32, ``probabilities`` (batch, T, tags) float32
==============  ====================================================================

Every task also returns ``tokens`` (batch, T) string: the subword pieces the model saw,
``<s>`` and ``</s>`` included, so a page can draw ``token_weights`` over them. The second
SavedModel signature ``serving_ids`` takes ``token_ids`` (batch, T) int32 and ``mask``
(batch, T) int32 (1 = a real token, post-padded) and returns the numeric outputs
(``probabilities`` / ``score`` / ``subword_tag_ids``, and ``token_weights``).
"""

from __future__ import annotations

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
ONNX_TEXT_FILE = "model_text.onnx"
LABELS_FILE = "labels.txt"
SPM_FILE = "spm.model"
REPORT_FILE = "report.json"

SERVING_SIGNATURE = "serving_default"
IDS_SIGNATURE = "serving_ids"
TEXT_INPUT = "text"
IDS_INPUT = "token_ids"
MASK_INPUT = "mask"
# onnxruntime-extensions' op domain (model_text.onnx's SentencePiece op)
ONNX_CONTRIB_DOMAIN = "ai.onnx.contrib"

TASKS = ("classifier", "regressor", "tagger")
FORMATS = ("saved_model", "tflite", "tflite_int8", "onnx", "onnx_int8", "onnx_text")
INT8_FORMATS = ("tflite_int8", "onnx_int8")
