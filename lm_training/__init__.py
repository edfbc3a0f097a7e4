"""Stage 04: pretraining and fine-tuning the language models with fastai (the fastai environment).

May import fastai, fastcore, torch, numpy, :mod:`ulmfit_core`, :mod:`ulmfit_torch` and the
data modules of :mod:`pretraining_utils` (``corpus``, ``lm_data``); never TensorFlow or Keras.

* :mod:`lm_training.config`: :class:`~lm_training.config.TrainConfig`, the phases, output paths;
* :mod:`lm_training.loaders`: the corpora and fastai loaders over them;
* :mod:`lm_training.pretrained`: a pretrained model's config and weights, for fine-tuning;
* :mod:`lm_training.models`: fastai's AWD-LSTM and our AWD-QRNN, built from an ``LMConfig``;
* :mod:`lm_training.learner`: the recipe's ``Learner`` (:func:`~lm_training.learner.build_learner`);
* :mod:`lm_training.callbacks`: the NaN/inf guard;
* :mod:`lm_training.distributed`: devices, torchrun's process group, DDP;
* :mod:`lm_training.checkpoint`: RNG states, per-epoch checkpoints, resuming, the final state;
* :mod:`lm_training.history`: the per-epoch history and its CSV;
* :mod:`lm_training.run`: a run assembled from those parts;
* :mod:`lm_training.train`: the driver, :func:`~lm_training.train.train_language_model`;
* :mod:`lm_training.lr_finder`: ``--lr-find``.

This file imports nothing, so that importing one module does not import them all.
"""
