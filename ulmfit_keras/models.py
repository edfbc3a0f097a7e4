"""The encoder (backbone) and the language model (task), built from a model config.

Layer names are part of the format: the converter's mapping table targets variable paths.
For ``n_layers = L`` (``NAME`` layers in graph order):

==============================  =============================================================
layer                           variables (``path``: shape)
==============================  =============================================================
``encoder_embedding``           ``encoder_embedding/embeddings``: (vocab, emb)
``input_dropout``               -
``lstm_{i}`` (AWD-LSTM)         ``lstm_{i}/lstm_cell/kernel``: (in_i, 4*out_i),
                                ``lstm_{i}/lstm_cell/recurrent_kernel``: (out_i, 4*out_i),
                                ``lstm_{i}/lstm_cell/bias``: (4*out_i,)
``qrnn_{i}`` (QRNN)             ``qrnn_{i}/kernel``: (window_i*in_i, 3*out_i),
                                ``qrnn_{i}/bias``: (3*out_i,)
``hidden_dropout_{i}``          - (after every recurrent layer but the last)
``lm_head`` (LM only)           tied: ``lm_head/bias``: (vocab,); untied: ``lm_head/kernel``:
                                (emb, vocab) and ``lm_head/bias``
==============================  =============================================================

with ``in_0 = emb``, ``in_i = hidden`` after, ``out_i = hidden`` except ``out_{L-1} = emb``.
:func:`variable_paths` lists them for a built model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import keras

from ulmfit_keras.config import PAD_ID, EncoderConfig
from ulmfit_keras.dropout import RNNDropout
from ulmfit_keras.embedding import MaskedEmbedding
from ulmfit_keras.heads import LMHead, TiedLMHead
from ulmfit_keras.lstm import WeightDropLSTM
from ulmfit_keras.qrnn import QRNNLayer

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDING_NAME",
    "LM_HEAD_NAME",
    "ULMFiTEncoder",
    "ULMFiTLanguageModel",
    "build_encoder",
    "variable_paths",
]

EMBEDDING_NAME = "encoder_embedding"
LM_HEAD_NAME = "lm_head"
INPUT_NAME = "token_ids"


def _seed(seed: int | None, offset: int) -> int | None:
    """Distinct seeds per layer from one model seed (``None`` stays random)."""
    return None if seed is None else seed + offset


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTEncoder(keras.Model):
    """AWD-LSTM or QRNN encoder: token ids ``(batch, seq)`` -> ``(batch, seq, emb_size)``.

    A functional model (keras-hub's backbone pattern): ``encoder_embedding`` (masks id
    ``pad_id``, embedding dropout) -> ``input_dropout`` -> recurrent layers with
    ``hidden_dropout_{i}`` between them (none after the last), as fastai's ``AWD_LSTM.forward``.
    The output carries the Keras mask ``ids != pad_id``; outputs at padded positions are 0 and
    padding never changes the state seen by later valid positions. The state starts at zero for
    every call (fastai after ``reset()``). Dropouts act only with ``training=True``.

    Args:
        arch: ``"awd-lstm"`` or ``"qrnn"``.
        vocab_size, emb_size, hidden_size, n_layers: sizes, as fastai's (the last recurrent
            layer has ``emb_size`` units, the others ``hidden_size``).
        pad_id: padding id (fastai: 1).
        input_p, weight_p, embed_p, hidden_p: fastai's dropouts.
        windows: QRNN windows per layer (default ``[2, 1, 1, ...]``); ``None`` for AWD-LSTM.
        zoneout: QRNN zoneout.
        fixed_seq_len: static sequence length of the input (``None``: any length).
        qrnn_forget_mult: ``"scan"`` or ``"associative"`` (see :mod:`ulmfit_keras.qrnn`).
        seed: base seed of the dropouts (``None``: random).
    """

    def __init__(
        self,
        arch: str,
        vocab_size: int,
        emb_size: int,
        hidden_size: int,
        n_layers: int,
        pad_id: int = PAD_ID,
        input_p: float = 0.0,
        weight_p: float = 0.0,
        embed_p: float = 0.0,
        hidden_p: float = 0.0,
        windows: list[int] | None = None,
        zoneout: float = 0.0,
        fixed_seq_len: int | None = None,
        qrnn_forget_mult: str = "scan",
        seed: int | None = None,
        name: str = "ulmfit_encoder",
        **kwargs: Any,
    ) -> None:
        # Validates the arguments (and fills in the default QRNN windows).
        spec = EncoderConfig(
            arch=arch,
            vocab_size=vocab_size,
            emb_size=emb_size,
            hidden_size=hidden_size,
            n_layers=n_layers,
            pad_id=pad_id,
            input_p=input_p,
            weight_p=weight_p,
            embed_p=embed_p,
            hidden_p=hidden_p,
            windows=None if windows is None else tuple(windows),
            zoneout=zoneout,
        )
        token_ids = keras.Input(shape=(fixed_seq_len,), dtype="int32", name=INPUT_NAME)
        x = MaskedEmbedding(
            vocab_size,
            emb_size,
            pad_id=pad_id,
            embed_p=embed_p,
            seed=_seed(seed, 0),
            name=EMBEDDING_NAME,
        )(token_ids)
        x = RNNDropout(input_p, seed=_seed(seed, 1), name="input_dropout")(x)
        for i, units in enumerate(spec.layer_sizes):
            if arch == "awd-lstm":
                rnn = WeightDropLSTM(
                    units,
                    weight_p=weight_p,
                    weight_drop_seed=_seed(seed, 100 + i),
                    name=f"lstm_{i}",
                )
            else:
                rnn = QRNNLayer(
                    units,
                    window=spec.windows[i],
                    zoneout=zoneout,
                    weight_p=weight_p,
                    forget_mult_impl=qrnn_forget_mult,
                    seed=_seed(seed, 100 + i),
                    name=f"qrnn_{i}",
                )
            x = rnn(x)
            if i < n_layers - 1:
                x = RNNDropout(hidden_p, seed=_seed(seed, 200 + i), name=f"hidden_dropout_{i}")(x)
        super().__init__(inputs=token_ids, outputs=x, name=name, **kwargs)

        self.arch = arch
        self.vocab_size = vocab_size
        self.emb_size = emb_size
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.pad_id = pad_id
        self.input_p = input_p
        self.weight_p = weight_p
        self.embed_p = embed_p
        self.hidden_p = hidden_p
        self.windows = None if spec.windows is None else tuple(spec.windows)
        self.zoneout = zoneout
        self.fixed_seq_len = fixed_seq_len
        self.qrnn_forget_mult = qrnn_forget_mult
        self.seed = seed

    @property
    def token_embedding(self) -> MaskedEmbedding:
        return self.get_layer(EMBEDDING_NAME)

    @property
    def recurrent_layers(self) -> list[keras.layers.Layer]:
        prefix = "lstm" if self.arch == "awd-lstm" else "qrnn"
        return [self.get_layer(f"{prefix}_{i}") for i in range(self.n_layers)]

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "arch": self.arch,
            "vocab_size": self.vocab_size,
            "emb_size": self.emb_size,
            "hidden_size": self.hidden_size,
            "n_layers": self.n_layers,
            "pad_id": self.pad_id,
            "input_p": self.input_p,
            "weight_p": self.weight_p,
            "embed_p": self.embed_p,
            "hidden_p": self.hidden_p,
            "windows": None if self.windows is None else list(self.windows),
            "zoneout": self.zoneout,
            "fixed_seq_len": self.fixed_seq_len,
            "qrnn_forget_mult": self.qrnn_forget_mult,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> ULMFiTEncoder:
        del custom_objects  # the constructor builds every layer
        return cls(**config)


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTLanguageModel(keras.Model):
    """The language model: a :class:`ULMFiTEncoder` backbone plus an LM head -> logits.

    Shares the backbone's layers (same graph from the same ``token_ids`` input): training the LM
    trains the encoder. ``logits = RNNDropout(output_p)(h) @ W + bias`` with ``W`` the embedding
    table (``tie_weights``, :class:`TiedLMHead`) or the head's own kernel (:class:`LMHead`).
    Outputs ``(batch, seq, vocab_size)`` logits carrying the encoder's mask.

    Args:
        backbone: the encoder.
        tie_weights: tie the decoder to the embedding (fastai's default).
        output_p: fastai's ``output_p``.
        out_bias: decoder bias (fastai's ``out_bias``).
        seed: seed of the output dropout.
    """

    def __init__(
        self,
        backbone: ULMFiTEncoder,
        tie_weights: bool = True,
        output_p: float = 0.0,
        out_bias: bool = True,
        seed: int | None = None,
        name: str = "ulmfit_lm",
        **kwargs: Any,
    ) -> None:
        if tie_weights:
            head = TiedLMHead(
                backbone.token_embedding,
                output_p=output_p,
                use_bias=out_bias,
                seed=seed,
                name=LM_HEAD_NAME,
            )
        else:
            head = LMHead(
                backbone.vocab_size,
                output_p=output_p,
                use_bias=out_bias,
                seed=seed,
                name=LM_HEAD_NAME,
            )
        logits = head(backbone.output)
        super().__init__(inputs=backbone.input, outputs=logits, name=name, **kwargs)
        self.backbone = backbone
        self.tie_weights = tie_weights
        self.output_p = output_p
        self.out_bias = out_bias
        self.seed = seed

    @property
    def lm_head(self) -> keras.layers.Layer:
        return self.get_layer(LM_HEAD_NAME)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "tie_weights": self.tie_weights,
            "output_p": self.output_p,
            "out_bias": self.out_bias,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> ULMFiTLanguageModel:
        config = dict(config)
        backbone = config.pop("backbone")
        if isinstance(backbone, Mapping):
            backbone = keras.layers.deserialize(backbone, custom_objects=custom_objects)
        return cls(backbone=backbone, **config)


def build_encoder(
    config: EncoderConfig | Mapping[str, Any] | Any,
    fixed_seq_len: int | None = None,
    seed: int | None = None,
    qrnn_forget_mult: str = "scan",
) -> tuple[ULMFiTEncoder, ULMFiTLanguageModel]:
    """Build the encoder and the language model sharing its layers from a model config.

    Args:
        config: an ``LMConfig`` (anything with ``to_dict()``), its dict, or an
            :class:`EncoderConfig`; keys as in ``ulmfit_core.lm_config``.
        fixed_seq_len: static input length (``None``: any length, e.g. ragged export).
        seed: base seed of all dropouts (``None``: random).
        qrnn_forget_mult: forget-mult implementation for QRNN layers.

    Returns:
        ``(encoder, lm)``: ids -> hidden states, and ids -> logits.
    """
    spec = EncoderConfig.from_any(config)
    encoder = ULMFiTEncoder(
        **spec.encoder_kwargs(),
        fixed_seq_len=fixed_seq_len,
        qrnn_forget_mult=qrnn_forget_mult,
        seed=seed,
    )
    lm = ULMFiTLanguageModel(encoder, **spec.head_kwargs(), seed=_seed(seed, 300))
    logger.debug("built %s encoder with %d weights", spec.arch, len(encoder.weights))
    return encoder, lm


def variable_paths(model: keras.layers.Layer) -> dict[str, tuple[int, ...]]:
    """``{variable.path: shape}`` of every weight of ``model``, in model order.

    These are the targets of the converter's mapping table, e.g.
    ``encoder_embedding/embeddings``, ``lstm_0/lstm_cell/kernel``, ``qrnn_0/kernel``,
    ``lm_head/bias``. Random-generator states (not weights) are not listed.

    Raises:
        ValueError: two weights share a path (the mapping would be ambiguous).
    """
    paths: dict[str, tuple[int, ...]] = {}
    for weight in model.weights:
        if weight.path in paths:
            raise ValueError(f"two weights share the path {weight.path!r}")
        paths[weight.path] = tuple(int(d) for d in weight.shape)
    return paths
