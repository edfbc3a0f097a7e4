"""Stage 13: a trained task directory -> serving SavedModel, TFLite (float, int8) and ONNX.

Imports TensorFlow, tensorflow_text, ulmfit_keras, ulmfit_tasks and ulmfit_core; the runtimes
(ai-edge-litert, onnxruntime, tf2onnx) only where an artifact is written or run. Layout of the
export directory: :mod:`task_export.layout`.
"""
