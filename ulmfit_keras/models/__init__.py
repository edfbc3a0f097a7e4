"""The models: the encoder (backbone), and the task models over it (one per file)."""

from ulmfit_keras.models.branching_attention_classifier import BranchingAttentionClassifier
from ulmfit_keras.models.builder import build_encoder, variable_paths
from ulmfit_keras.models.ulmfit_classifier import ULMFiTClassifier
from ulmfit_keras.models.ulmfit_encoder import EMBEDDING_NAME, ULMFiTEncoder
from ulmfit_keras.models.ulmfit_language_model import LM_HEAD_NAME, ULMFiTLanguageModel
from ulmfit_keras.models.ulmfit_regressor import LabelNormalizer, ULMFiTRegressor
from ulmfit_keras.models.ulmfit_tagger import ULMFiTTagger

__all__ = [
    "EMBEDDING_NAME",
    "LM_HEAD_NAME",
    "BranchingAttentionClassifier",
    "LabelNormalizer",
    "ULMFiTClassifier",
    "ULMFiTEncoder",
    "ULMFiTLanguageModel",
    "ULMFiTRegressor",
    "ULMFiTTagger",
    "build_encoder",
    "variable_paths",
]
