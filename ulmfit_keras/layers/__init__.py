"""The layers: embedding, dropouts, the two recurrent layers, LM heads, pooling, numericalizer."""

from ulmfit_keras.layers.attention_pooling import MaskedSoftmax, WeightedSum
from ulmfit_keras.layers.forget_mult import FORGET_MULT_IMPLS, forget_mult
from ulmfit_keras.layers.lm_head import LMHead, TiedLMHead
from ulmfit_keras.layers.masked_concat_pool import MaskedConcatPool
from ulmfit_keras.layers.masked_embedding import MaskedEmbedding
from ulmfit_keras.layers.qrnn import QRNNLayer
from ulmfit_keras.layers.rnn_dropout import RNNDropout
from ulmfit_keras.layers.spm_numericalizer import SPMNumericalizer
from ulmfit_keras.layers.weight_drop_lstm import WeightDropLSTM

__all__ = [
    "FORGET_MULT_IMPLS",
    "LMHead",
    "MaskedConcatPool",
    "MaskedEmbedding",
    "MaskedSoftmax",
    "QRNNLayer",
    "RNNDropout",
    "SPMNumericalizer",
    "TiedLMHead",
    "WeightDropLSTM",
    "WeightedSum",
    "forget_mult",
]
