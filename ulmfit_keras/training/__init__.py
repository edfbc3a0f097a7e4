"""ULMFiT's fine-tuning tricks: schedules, layer groups, discriminative rates, unfreezing,
AWD weight-drop from outside a layer, the LR finder."""

from ulmfit_keras.training.discriminative import (
    DISCRIMINATIVE_FACTOR,
    DiscriminativeAdam,
    DiscriminativeAdamW,
    DiscriminativeSGD,
    discriminative_multipliers,
)
from ulmfit_keras.training.layer_groups import LayerGroup, layer_groups
from ulmfit_keras.training.lr_finder import ExponentialSweep, LRFinderResult, find_lr
from ulmfit_keras.training.schedules import OneCycleLR, SlantedTriangularLR
from ulmfit_keras.training.unfreezing import GradualUnfreezing
from ulmfit_keras.training.weight_drop import WeightDropCallback, weight_drop_variables

__all__ = [
    "DISCRIMINATIVE_FACTOR",
    "DiscriminativeAdam",
    "DiscriminativeAdamW",
    "DiscriminativeSGD",
    "ExponentialSweep",
    "GradualUnfreezing",
    "LRFinderResult",
    "LayerGroup",
    "OneCycleLR",
    "SlantedTriangularLR",
    "WeightDropCallback",
    "discriminative_multipliers",
    "find_lr",
    "layer_groups",
    "weight_drop_variables",
]
