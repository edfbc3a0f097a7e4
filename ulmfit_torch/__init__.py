"""The PyTorch models and ``.pth`` files, shared by the fastai and the TensorFlow environments.

May import torch, numpy and :mod:`ulmfit_core` only: never fastai, fastcore or TensorFlow. The
converter (TensorFlow environment, torch on the CPU, no fastai) reads ``.pth`` files and builds
its PyTorch reference with it; stage 04 (``lm_training``) builds its AWD-QRNN from it.

* :mod:`ulmfit_torch.forget_mult`: the QRNN's recurrence, one module per algorithm, and the
  dispatch on device;
* :mod:`ulmfit_torch.qrnn`: the QRNN layers, state-dict compatible with fastai 2.2.7;
* :mod:`ulmfit_torch.weight_dropout`: fastai's weight dropout, used by the QRNN and the LSTM;
* :mod:`ulmfit_torch.checkpoint_io`: reading ``.pth`` files safely, writing them atomically.
* :mod:`ulmfit_torch.state_dict` and :mod:`ulmfit_torch.fastai_keys`: the one reader of fastai
  language-model state dicts (layout, model config, checked tensors) and its key families;
* :mod:`ulmfit_torch.classifier_state`: the reader of fastai text-classifier state dicts (the
  encoder through the LM reader, the ``PoolingLinearClassifier`` head checked against the
  sidecar).

This file imports nothing, so that ``ulmfit_torch.forget_mult`` stays the package of that name.
"""
