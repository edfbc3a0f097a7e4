"""Stages 06 and 07: use a stage-05 export and check it, in the TensorFlow environment.

* :mod:`evaluation.perplexity` (stage 06): the converted LM's perplexity on held-out text, in
  PyTorch (the ``.pth`` copied into the export, through :mod:`convert.reference`) and in
  TensorFlow (``keras_weights/`` or the SavedModel), over the same batches;
* :mod:`evaluation.tryout` (stage 07): the SavedModel loaded with plain TensorFlow, as a
  downstream user would, encoding a sentence.

Imports TensorFlow (with ``tensorflow_text``, inside the functions that need it), torch on the
CPU and numpy; from this project :mod:`ulmfit_core`, :mod:`ulmfit_keras`, :mod:`ulmfit_torch`
(reading the ``.pth``), :mod:`convert` (the PyTorch reference, padding, :class:`ParityError`)
and :mod:`pretraining_utils.lm_data` (fastai's LM stream batching; numpy only). Never fastai.
"""
