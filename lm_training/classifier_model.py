"""Stage 08's model: fastai's text classifier on a stage-04 language model's encoder.

:func:`build_text_classifier` builds exactly what fastai 2.8's ``get_text_classifier`` builds,
``SequentialRNN(SentenceEncoder(bptt, encoder, pad_idx=1, max_len), PoolingLinearClassifier(
[3 * emb, *lin_ftrs, n_classes], ps, bptt))``, with the encoder of
:func:`lm_training.models.build_encoder` (fastai's AWD-LSTM, or our AWD-QRNN), so its state
dict has fastai's keys: ``0.module.*`` for the encoder, ``1.layers.{i}.*`` for the head.

The dropouts are fastai's ``awd_lstm_clas_config`` (fastai 2.2.7's ``awd_qrnn_clas_config`` has
the same ones) times ``drop_mult``; the head's hidden layers keep fastai's 0.1, which
``get_text_classifier`` does not scale. The encoder's config is the language model's with those
dropouts (:func:`classifier_lm_config`); the weights are the language model's ``0.*`` tensors
(:func:`load_encoder_weights`), checked against the SentencePiece model first
(:func:`check_vocabulary`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import sentencepiece
import torch
from fastai.text.models.awdlstm import awd_lstm_clas_config, awd_lstm_clas_split
from fastai.text.models.core import PoolingLinearClassifier, SentenceEncoder, SequentialRNN
from torch import nn

from lm_training.models import build_encoder
from lm_training.pretrained import load_weights
from pretraining_utils.encode import model_special_ids
from ulmfit_core.artifacts import library_versions, sha256_file
from ulmfit_core.classifier_config import ClassifierHead
from ulmfit_core.errors import InputError
from ulmfit_core.ids import PAD_ID, SPECIAL_IDS
from ulmfit_core.lm_config import DROPOUT_NAMES, LMConfig

__all__ = [
    "CLASSIFIER_DROPOUTS",
    "HIDDEN_HEAD_DROPOUT",
    "build_text_classifier",
    "check_vocabulary",
    "classifier_head",
    "classifier_lm_config",
    "classifier_split",
    "load_encoder_weights",
]

logger = logging.getLogger(__name__)

# fastai's classifier dropouts, before drop_mult (output_p: the head's first layer).
CLASSIFIER_DROPOUTS: dict[str, float] = {name: awd_lstm_clas_config[name] for name in DROPOUT_NAMES}
# fastai's ps of each lin_ftrs layer (get_text_classifier's default; not scaled by drop_mult).
HIDDEN_HEAD_DROPOUT = 0.1


def check_vocabulary(
    lm_config: LMConfig, processor: sentencepiece.SentencePieceProcessor, spm_path: Path, lm: str
) -> str:
    """Check that the SentencePiece model is the language model's; return its sha256.

    Raises:
        InputError: other special ids than fastai's, another vocabulary size, or another model
            than the one the language model's sidecar records.
    """
    special = model_special_ids(processor)
    if special != SPECIAL_IDS:
        raise InputError(
            f"the SentencePiece model {spm_path} has special ids {special}, but the models need "
            f"fastai's {SPECIAL_IDS}; use the model stage 02 built for the language model"
        )
    pieces = processor.get_piece_size()
    if pieces != lm_config.vocab_size:
        raise InputError(
            f"the language model {lm} has a vocabulary of {lm_config.vocab_size} pieces, but the "
            f"SentencePiece model {spm_path} has {pieces}; use the SPM model the language model "
            "was trained with"
        )
    sha = sha256_file(spm_path)
    if lm_config.spm_model_sha256 and lm_config.spm_model_sha256 != sha:
        raise InputError(
            f"the language model {lm} was trained with SPM model sha256 "
            f"{lm_config.spm_model_sha256}, but {spm_path} has sha256 {sha}; use the SPM model "
            "the language model was trained with"
        )
    return sha


def classifier_lm_config(
    pretrained: LMConfig, drop_mult: float, spm_model_sha256: str | None
) -> LMConfig:
    """The classifier's encoder: the language model's config with fastai's classifier dropouts
    times ``drop_mult`` (``output_p`` is the head's first dropout)."""
    return pretrained.replace(
        drop_mult=drop_mult,
        spm_model_sha256=spm_model_sha256 or pretrained.spm_model_sha256,
        versions=library_versions("torch", "fastai", "fastcore"),
        **{name: rate * drop_mult for name, rate in CLASSIFIER_DROPOUTS.items()},
    )


def build_text_classifier(
    lm_config: LMConfig,
    n_classes: int,
    *,
    bptt: int,
    max_len: int,
    lin_ftrs: Sequence[int] = (50,),
) -> SequentialRNN:
    """fastai 2.8's ``get_text_classifier`` for ``lm_config``'s encoder.

    Args:
        lm_config: the encoder (:func:`classifier_lm_config`); its ``output_p`` is the dropout
            before the head's first linear layer, the hidden ones have
            :data:`HIDDEN_HEAD_DROPOUT`.
        n_classes: outputs of the last layer.
        bptt: the chunk the encoder reads at a time, also the pooling's "last chunk".
        max_len: only chunks within the last ``max_len`` tokens are pooled.
        lin_ftrs: hidden widths of the head.
    """
    encoder = SentenceEncoder(bptt, build_encoder(lm_config), pad_idx=PAD_ID, max_len=max_len)
    dims = [3 * lm_config.emb_size, *lin_ftrs, n_classes]
    ps = [lm_config.output_p, *[HIDDEN_HEAD_DROPOUT] * len(lin_ftrs)]
    return SequentialRNN(encoder, PoolingLinearClassifier(dims, ps, bptt=bptt))


def classifier_head(model: nn.Module, labels: Sequence[str]) -> ClassifierHead:
    """The sidecar's description of a built classifier, read from its modules: the head's
    sizes, dropouts and BatchNorm settings, the encoder's ``bptt`` and ``max_len``."""
    encoder, head = model[0], model[1]
    sizes, dropouts, norms = [], [], []
    for block in head.layers:  # fastai's LinBnDrop: BatchNorm1d, [Dropout], Linear, [ReLU]
        norm = next(m for m in block if isinstance(m, nn.BatchNorm1d))
        linear = next(m for m in block if isinstance(m, nn.Linear))
        drop = next((m for m in block if isinstance(m, nn.Dropout)), None)
        sizes.append(linear.in_features)
        dropouts.append(float(drop.p) if drop is not None else 0.0)
        norms.append((float(norm.eps), float(norm.momentum)))
    sizes.append(linear.out_features)
    if len(set(norms)) != 1:
        raise ValueError(f"the head's BatchNorm layers differ: {norms}")
    (eps, momentum) = norms[0]
    return ClassifierHead(
        labels=list(labels),
        head_sizes=sizes,
        head_dropouts=dropouts,
        bptt=int(encoder.bptt),
        max_len=int(encoder.max_len),
        bn_eps=eps,
        bn_momentum=momentum,
    )


def load_encoder_weights(
    model: nn.Module, lm_weights: dict[str, torch.Tensor], source: str
) -> None:
    """Load a language model's encoder (its ``0.*`` tensors; the decoder ``1.*`` is dropped)
    into the classifier's ``SentenceEncoder`` module.

    Raises:
        InputError: keys outside ``0.*``/``1.*``, or an encoder that does not fit (missing or
            unexpected keys, other shapes).
    """
    strays = sorted(k for k in lm_weights if not k.startswith(("0.", "1.")))
    if strays:
        raise InputError(
            f"{source} is not a fastai language model (keys {strays[:5]} are neither encoder "
            "'0.*' nor decoder '1.*')"
        )
    encoder = {k.removeprefix("0."): v for k, v in lm_weights.items() if k.startswith("0.")}
    load_weights(model[0].module, encoder, source)


def classifier_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """fastai's classifier layer groups: the embedding, one per recurrent layer, the head.

    ``freeze_to(-1)`` trains the head alone, ``freeze_to(-2)`` the last recurrent layer too, and
    so on (gradual unfreezing). fastai's ``awd_lstm_clas_split``; it fits the AWD-QRNN too.
    """
    return list(awd_lstm_clas_split(model))
