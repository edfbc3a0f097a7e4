"""Stages 04 and 08 with fastai (the fastai environment): the language models, pretrained and
fine-tuned, and the text classifiers fine-tuned from them.

May import fastai, fastcore, torch, numpy, sentencepiece, :mod:`ulmfit_core`, :mod:`ulmfit_torch`
and the data modules of :mod:`pretraining_utils` (``corpus``, ``lm_data``, ``encode``); never
TensorFlow or Keras.

Stage 04:

* :mod:`lm_training.config`: :class:`~lm_training.config.TrainConfig`, the phases, output paths;
* :mod:`lm_training.loaders`: the corpora and fastai loaders over them;
* :mod:`lm_training.pretrained`: a pretrained model's config and weights, for fine-tuning;
* :mod:`lm_training.models`: fastai's AWD-LSTM and our AWD-QRNN, built from an ``LMConfig``;
* :mod:`lm_training.learner`: the recipe's ``Learner`` (:func:`~lm_training.learner.build_learner`);
* :mod:`lm_training.callbacks`: the NaN/inf guard;
* :mod:`lm_training.distributed`: devices, torchrun's process group, DDP;
* :mod:`lm_training.checkpoint`: RNG states, per-epoch checkpoints, resuming, the final state;
* :mod:`lm_training.history`: the per-epoch history and its CSV;
* :mod:`lm_training.phases`: the plan's ``fit_one_cycle`` phases, resumed from a checkpoint;
* :mod:`lm_training.run`: a run assembled from those parts;
* :mod:`lm_training.train`: the driver, :func:`~lm_training.train.train_language_model`;
* :mod:`lm_training.lr_finder`: ``--lr-find``.

Stage 08, on the same Learner, checkpoint, history and device machinery:

* :mod:`lm_training.classifier_config`: the run's ``ClassifierTrainConfig``, the
  gradual-unfreezing plan, the summary;
* :mod:`lm_training.classifier_data`: labelled TSV examples as SentencePiece ids, fastai's
  ``SortedDL`` loaders with chunk-aligned padding;
* :mod:`lm_training.classifier_model`: fastai's ``get_text_classifier`` on a language model's
  encoder, its dropouts, its sidecar description, the vocabulary check;
* :mod:`lm_training.classifier_train`: the driver,
  :func:`~lm_training.classifier_train.train_text_classifier`.

This file imports nothing, so that importing one module does not import them all.
"""
