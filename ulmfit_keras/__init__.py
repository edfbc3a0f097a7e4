"""Keras 3 layers and models for ULMFiT (AWD-LSTM) and MultiFiT (QRNN) language models.

Runs in the TensorFlow environment. It imports Keras, TensorFlow (``tensorflow_text`` for the
numericalizer), numpy and ``ulmfit_core``, and nothing else of this repository: not fastai, not
torch, not ``pretraining_utils`` / ``ulmfit_torch`` / ``lm_training``, and not the task drivers
(``ulmfit_tasks``, which build on this package). ``tests/tf/test_keras_imports.py`` checks it.
Models trained in fastai are converted variable by variable into these layers; the forward pass
equals fastai's (eval mode, after ``reset()``) to float32 rounding.

Layout (keras-hub's): ``layers/`` (one layer per file), ``models/`` (the encoder backbone and
one task model per file), ``training/`` (schedules, layer groups, discriminative rates,
unfreezing, weight-drop callback, LR finder), ``loading.py`` (export directories and
SavedModels), ``config.py`` (the model config: ``EncoderConfig`` is
``ulmfit_core.lm_config.LMConfig``), and the tagging helpers ``word_alignment.py``,
``losses.py``, ``metrics.py``. Every Keras class is registered under the package name
``ulmfit_keras`` (``"ulmfit_keras>ClassName"``), which is what a saved ``.keras`` file refers to.

Public API (all importable from ``ulmfit_keras``):

* layers: :class:`MaskedEmbedding`, :class:`RNNDropout`, :class:`WeightDropLSTM`,
  :class:`QRNNLayer` (+ :func:`forget_mult`), :class:`TiedLMHead`, :class:`LMHead`,
  :class:`SPMNumericalizer`, :class:`MaskedConcatPool`, :class:`MaskedSoftmax`,
  :class:`WeightedSum`;
* models: :class:`ULMFiTEncoder`, :class:`ULMFiTLanguageModel`, :func:`build_encoder`,
  :func:`variable_paths`, :class:`EncoderConfig`, :func:`read_config`;
* loading: :func:`load_encoder`, :func:`load_language_model`, :class:`SavedModelEncoder`;
* task models: :class:`ULMFiTClassifier`, :class:`ULMFiTRegressor` (+ :class:`LabelNormalizer`),
  :class:`BranchingAttentionClassifier`, :class:`ULMFiTTagger`;
* tagging: :func:`align_word_labels`, :func:`entity_f1`,
  :class:`MaskedSparseCategoricalCrossentropy`, :class:`MaskedSparseCategoricalAccuracy`;
* training: :class:`SlantedTriangularLR`, :class:`OneCycleLR`, :class:`GradualUnfreezing`,
  :class:`DiscriminativeAdam` (``AdamW``, ``SGD``), :class:`LayerGroup`, :func:`layer_groups`,
  :func:`discriminative_multipliers`, :class:`WeightDropCallback`,
  :func:`weight_drop_variables`, :func:`find_lr`.
"""

from ulmfit_keras.config import ARCHS, PAD_ID, EncoderConfig, read_config
from ulmfit_keras.layers import (
    FORGET_MULT_IMPLS,
    LMHead,
    MaskedConcatPool,
    MaskedEmbedding,
    MaskedSoftmax,
    QRNNLayer,
    RNNDropout,
    SPMNumericalizer,
    TiedLMHead,
    WeightDropLSTM,
    WeightedSum,
    forget_mult,
)
from ulmfit_keras.loading import (
    SIGNATURES,
    SavedModelEncoder,
    find_weights_file,
    load_encoder,
    load_language_model,
)
from ulmfit_keras.losses import MaskedSparseCategoricalCrossentropy
from ulmfit_keras.metrics import MaskedSparseCategoricalAccuracy, entity_f1
from ulmfit_keras.models import (
    EMBEDDING_NAME,
    LM_HEAD_NAME,
    BranchingAttentionClassifier,
    LabelNormalizer,
    ULMFiTClassifier,
    ULMFiTEncoder,
    ULMFiTLanguageModel,
    ULMFiTRegressor,
    ULMFiTTagger,
    build_encoder,
    variable_paths,
)
from ulmfit_keras.training import (
    DiscriminativeAdam,
    DiscriminativeAdamW,
    DiscriminativeSGD,
    ExponentialSweep,
    GradualUnfreezing,
    LayerGroup,
    LRFinderResult,
    OneCycleLR,
    SlantedTriangularLR,
    WeightDropCallback,
    discriminative_multipliers,
    find_lr,
    layer_groups,
    weight_drop_variables,
)
from ulmfit_keras.word_alignment import align_word_labels

__all__ = [
    "ARCHS",
    "EMBEDDING_NAME",
    "FORGET_MULT_IMPLS",
    "LM_HEAD_NAME",
    "PAD_ID",
    "SIGNATURES",
    "BranchingAttentionClassifier",
    "DiscriminativeAdam",
    "DiscriminativeAdamW",
    "DiscriminativeSGD",
    "EncoderConfig",
    "ExponentialSweep",
    "GradualUnfreezing",
    "LMHead",
    "LRFinderResult",
    "LabelNormalizer",
    "LayerGroup",
    "MaskedConcatPool",
    "MaskedEmbedding",
    "MaskedSoftmax",
    "MaskedSparseCategoricalAccuracy",
    "MaskedSparseCategoricalCrossentropy",
    "OneCycleLR",
    "QRNNLayer",
    "RNNDropout",
    "SPMNumericalizer",
    "SavedModelEncoder",
    "SlantedTriangularLR",
    "TiedLMHead",
    "ULMFiTClassifier",
    "ULMFiTEncoder",
    "ULMFiTLanguageModel",
    "ULMFiTRegressor",
    "ULMFiTTagger",
    "WeightDropCallback",
    "WeightDropLSTM",
    "WeightedSum",
    "align_word_labels",
    "build_encoder",
    "discriminative_multipliers",
    "entity_f1",
    "find_lr",
    "find_weights_file",
    "forget_mult",
    "layer_groups",
    "load_encoder",
    "load_language_model",
    "read_config",
    "variable_paths",
    "weight_drop_variables",
]
