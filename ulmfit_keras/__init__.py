"""Keras 3 layers and models for ULMFiT (AWD-LSTM) and MultiFiT (QRNN) language models.

Runs in the TensorFlow environment and never imports fastai, torch or ``pretraining_utils``.
Models trained in fastai are converted variable by variable into these layers; the forward pass
equals fastai's (eval mode, after ``reset()``) to float32 rounding.

Public API:

* layers: :class:`MaskedEmbedding`, :class:`RNNDropout`, :class:`WeightDropLSTM`,
  :class:`QRNNLayer` (+ :func:`forget_mult`), :class:`TiedLMHead`, :class:`LMHead`,
  :class:`SPMNumericalizer`;
* models: :class:`ULMFiTEncoder`, :class:`ULMFiTLanguageModel`, :func:`build_encoder`,
  :func:`variable_paths`, :class:`EncoderConfig`;
* loading: :func:`load_encoder`, :func:`load_language_model`, :class:`SavedModelEncoder`;
* downstream heads (``heads_tasks``): :class:`ULMFiTClassifier`, :class:`ULMFiTRegressor`,
  :class:`BranchingAttentionClassifier`, :class:`MaskedConcatPool`, :class:`LabelNormalizer`;
  tagging (``tagging``): :class:`ULMFiTTagger`, :func:`align_word_labels`, :func:`entity_f1`;
* training (``schedules``, ``training_tricks``, ``weight_drop``): :class:`SlantedTriangularLR`,
  :class:`OneCycleLR`, :class:`GradualUnfreezing`, :class:`DiscriminativeAdam`,
  :func:`layer_groups`, :func:`discriminative_multipliers`, :class:`WeightDropCallback`,
  :func:`weight_drop_variables`.
"""

from ulmfit_keras.config import ARCHS, PAD_ID, EncoderConfig, read_config
from ulmfit_keras.dropout import RNNDropout
from ulmfit_keras.embedding import MaskedEmbedding
from ulmfit_keras.heads import LMHead, TiedLMHead
from ulmfit_keras.heads_tasks import (
    BranchingAttentionClassifier,
    LabelNormalizer,
    MaskedConcatPool,
    ULMFiTClassifier,
    ULMFiTRegressor,
)
from ulmfit_keras.loading import (
    SIGNATURES,
    SavedModelEncoder,
    find_weights_file,
    load_encoder,
    load_language_model,
)
from ulmfit_keras.lstm import WeightDropLSTM
from ulmfit_keras.models import (
    EMBEDDING_NAME,
    LM_HEAD_NAME,
    ULMFiTEncoder,
    ULMFiTLanguageModel,
    build_encoder,
    variable_paths,
)
from ulmfit_keras.numericalizer import SPMNumericalizer
from ulmfit_keras.qrnn import QRNNLayer, forget_mult
from ulmfit_keras.schedules import OneCycleLR, SlantedTriangularLR
from ulmfit_keras.tagging import ULMFiTTagger, align_word_labels, entity_f1
from ulmfit_keras.training_tricks import (
    DiscriminativeAdam,
    GradualUnfreezing,
    discriminative_multipliers,
    layer_groups,
)
from ulmfit_keras.weight_drop import WeightDropCallback, weight_drop_variables

__all__ = [
    "ARCHS",
    "EMBEDDING_NAME",
    "LM_HEAD_NAME",
    "PAD_ID",
    "SIGNATURES",
    "BranchingAttentionClassifier",
    "DiscriminativeAdam",
    "EncoderConfig",
    "GradualUnfreezing",
    "LMHead",
    "LabelNormalizer",
    "MaskedConcatPool",
    "MaskedEmbedding",
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
    "align_word_labels",
    "build_encoder",
    "discriminative_multipliers",
    "entity_f1",
    "find_weights_file",
    "forget_mult",
    "layer_groups",
    "load_encoder",
    "load_language_model",
    "read_config",
    "variable_paths",
    "weight_drop_variables",
]
