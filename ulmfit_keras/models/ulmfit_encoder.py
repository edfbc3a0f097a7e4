"""The encoder (backbone): token ids -> hidden states, AWD-LSTM or QRNN, built from an LM config.

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
:func:`~ulmfit_keras.variable_paths` lists them for a built model.
"""

from __future__ import annotations

import logging
from typing import Any

import keras

from ulmfit_core.ids import PAD_ID, SPECIAL_IDS
from ulmfit_core.lm_config import LMConfig
from ulmfit_keras.layers.forget_mult import resolve_forget_mult_impl
from ulmfit_keras.layers.masked_embedding import MaskedEmbedding
from ulmfit_keras.layers.qrnn import QRNNLayer
from ulmfit_keras.layers.rnn_dropout import RNNDropout
from ulmfit_keras.layers.weight_drop_lstm import WeightDropLSTM

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDING_NAME",
    "ENCODER_FIELDS",
    "INPUT_NAME",
    "ULMFiTEncoder",
    "check_keras_support",
    "layer_seed",
]

EMBEDDING_NAME = "encoder_embedding"
INPUT_NAME = "token_ids"
# The LM config fields the encoder is built from: its constructor arguments, its attributes and
# its get_config() keys (with fixed_seq_len, qrnn_forget_mult and seed, which are not the model's).
ENCODER_FIELDS = (
    "arch",
    "vocab_size",
    "emb_size",
    "hidden_size",
    "n_layers",
    "pad_id",
    "input_p",
    "weight_p",
    "embed_p",
    "hidden_p",
    "windows",
    "zoneout",
)


def layer_seed(seed: int | None, offset: int) -> int | None:
    """Distinct seeds per layer from one model seed (``None`` stays random)."""
    return None if seed is None else seed + offset


def check_keras_support(config: LMConfig) -> None:
    """Refuse what the LM config allows but this library does not build.

    Raises:
        ValueError: a bidirectional encoder.
    """
    if config.bidir:
        raise ValueError("config: bidirectional encoders are not supported by ulmfit_keras")


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTEncoder(keras.Model):
    """AWD-LSTM or QRNN encoder: token ids ``(batch, seq)`` -> ``(batch, seq, emb_size)``.

    A functional model (keras-hub's backbone pattern): ``encoder_embedding`` (masks id
    ``pad_id``, embedding dropout) -> ``input_dropout`` -> recurrent layers with
    ``hidden_dropout_{i}`` between them (none after the last), as fastai's ``AWD_LSTM.forward``.
    The output carries the Keras mask ``ids != pad_id``; outputs at padded positions are 0 and
    padding never changes the state seen by later valid positions. The state starts at zero for
    every call (fastai after ``reset()``). Dropouts act only with ``training=True``.

    Build it from a model config with :meth:`from_lm_config` (or :func:`~ulmfit_keras.
    build_encoder`, which adds the LM head); the arguments are the config's fields
    (:class:`~ulmfit_core.lm_config.LMConfig`, validated there, with its defaults for
    whatever is ``None``).

    Args:
        arch: ``"awd-lstm"`` or ``"qrnn"``.
        vocab_size, emb_size, hidden_size, n_layers: sizes, as fastai's (the last recurrent
            layer has ``emb_size`` units, the others ``hidden_size``).
        pad_id: padding id (fastai: 1).
        input_p, weight_p, embed_p, hidden_p: fastai's dropouts (``None``: the recipe's for
            ``arch``).
        windows: QRNN windows per layer (``None``: fastai's ``[2, 1, 1, ...]``); ``None`` for
            AWD-LSTM.
        zoneout: QRNN zoneout.
        fixed_seq_len: static sequence length of the input (``None``: any length).
        qrnn_forget_mult: ``"sequential"`` or ``"log_depth"``
            (:mod:`ulmfit_keras.layers.forget_mult`).
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
        input_p: float | None = None,
        weight_p: float | None = None,
        embed_p: float | None = None,
        hidden_p: float | None = None,
        windows: list[int] | None = None,
        zoneout: float = 0.0,
        fixed_seq_len: int | None = None,
        qrnn_forget_mult: str = "sequential",
        seed: int | None = None,
        name: str = "ulmfit_encoder",
        **kwargs: Any,
    ) -> None:
        # Validates the arguments and fills in the defaults (dropouts, QRNN windows).
        spec = LMConfig(
            arch=arch,
            vocab_size=vocab_size,
            emb_size=emb_size,
            hidden_size=hidden_size,
            n_layers=n_layers,
            pad_id=pad_id,
            special_ids={**SPECIAL_IDS, "<pad>": pad_id},  # the encoder knows only its pad id
            input_p=input_p,
            weight_p=weight_p,
            embed_p=embed_p,
            hidden_p=hidden_p,
            windows=windows,
            zoneout=zoneout,
        )
        qrnn_forget_mult = resolve_forget_mult_impl(qrnn_forget_mult)
        token_ids = keras.Input(shape=(fixed_seq_len,), dtype="int32", name=INPUT_NAME)
        x = MaskedEmbedding(
            spec.vocab_size,
            spec.emb_size,
            pad_id=spec.pad_id,
            embed_p=spec.embed_p,
            seed=layer_seed(seed, 0),
            name=EMBEDDING_NAME,
        )(token_ids)
        x = RNNDropout(spec.input_p, seed=layer_seed(seed, 1), name="input_dropout")(x)
        for i, units in enumerate(spec.layer_sizes):
            if spec.arch == "awd-lstm":
                rnn = WeightDropLSTM(
                    units,
                    weight_p=spec.weight_p,
                    weight_drop_seed=layer_seed(seed, 100 + i),
                    name=f"lstm_{i}",
                )
            else:
                rnn = QRNNLayer(
                    units,
                    window=spec.layer_windows[i],
                    zoneout=spec.zoneout,
                    weight_p=spec.weight_p,
                    forget_mult_impl=qrnn_forget_mult,
                    seed=layer_seed(seed, 100 + i),
                    name=f"qrnn_{i}",
                )
            x = rnn(x)
            if i < spec.n_layers - 1:
                dropout_seed = layer_seed(seed, 200 + i)
                x = RNNDropout(spec.hidden_p, seed=dropout_seed, name=f"hidden_dropout_{i}")(x)
        super().__init__(inputs=token_ids, outputs=x, name=name, **kwargs)

        for field in ENCODER_FIELDS:
            setattr(self, field, getattr(spec, field))
        windows = spec.layer_windows
        self.windows = None if windows is None else tuple(windows)
        self.fixed_seq_len = fixed_seq_len
        self.qrnn_forget_mult = qrnn_forget_mult
        self.seed = seed

    @classmethod
    def from_lm_config(
        cls,
        config: LMConfig | dict[str, Any] | Any,
        *,
        fixed_seq_len: int | None = None,
        qrnn_forget_mult: str = "sequential",
        seed: int | None = None,
        **kwargs: Any,
    ) -> ULMFiTEncoder:
        """The encoder of a model config: an ``LMConfig``, its dict, or a plain dict of fields.

        Args:
            config: anything :meth:`LMConfig.from_any <ulmfit_core.lm_config.LMConfig.from_any>`
                reads.
            fixed_seq_len, qrnn_forget_mult, seed: as the constructor's.
            **kwargs: ``keras.Model`` arguments (``name`` ...).

        Raises:
            ValueError: an invalid config, or one this library does not build (bidirectional).
        """
        spec = LMConfig.from_any(config)
        check_keras_support(spec)
        return cls(
            **{field: getattr(spec, field) for field in ENCODER_FIELDS},
            fixed_seq_len=fixed_seq_len,
            qrnn_forget_mult=qrnn_forget_mult,
            seed=seed,
            **kwargs,
        )

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
            **{field: getattr(self, field) for field in ENCODER_FIELDS},
            "windows": None if self.windows is None else list(self.windows),
            "fixed_seq_len": self.fixed_seq_len,
            "qrnn_forget_mult": self.qrnn_forget_mult,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> ULMFiTEncoder:
        del custom_objects  # the constructor builds every layer
        return cls(**config)
