"""LM heads: fastai's ``LinearDecoder``, tied to the embedding or with its own kernel."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ulmfit_keras.layers.initializers import torch_linear_initializer
from ulmfit_keras.layers.masked_embedding import MaskedEmbedding
from ulmfit_keras.layers.rnn_dropout import RNNDropout

__all__ = ["LMHead", "TiedLMHead"]


class _LMHeadBase(keras.layers.Layer):
    """``logits = RNNDropout(output_p)(h) @ W + bias``; subclasses say where ``W`` lives."""

    def __init__(
        self,
        vocab_size: int,
        output_p: float = 0.0,
        use_bias: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.output_p = float(output_p)
        self.use_bias = bool(use_bias)
        self.seed = seed
        self.output_dropout = RNNDropout(output_p, seed=seed, name="output_dropout")
        self.supports_masking = True

    def _build_bias(self) -> None:
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.vocab_size,), initializer="zeros")

    def _decoder_kernel(self):
        raise NotImplementedError

    def call(self, inputs, training: bool = False):
        x = self.output_dropout(inputs, training=training)
        logits = ops.matmul(x, self._decoder_kernel())
        if self.bias is not None:
            logits = logits + self.bias
        return logits

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocab_size)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "output_p": self.output_p,
                "use_bias": self.use_bias,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class TiedLMHead(_LMHeadBase):
    """LM head whose decoder matrix is the embedding table: ``h @ embeddings^T + bias``.

    It holds a reference to the :class:`MaskedEmbedding` (keras-hub's ``MaskedLMHead`` pattern)
    and reads its ``embeddings`` variable at call time, so the two are one variable: training
    either updates both, and a checkpoint stores it once. fastai ties ``decoder.weight`` to
    ``encoder.weight``, the raw table (embedding dropout does not reach the decoder), which is
    what is used here.

    Args:
        embedding: the encoder's embedding layer (built).
        output_p: fastai's ``output_p`` (an :class:`RNNDropout` on the hidden states).
        use_bias: fastai's ``out_bias``.
        seed: seed of the output dropout.

    Variables: ``NAME/bias`` ``(vocab_size,)`` (fastai's ``decoder.bias``).

    ``get_config`` serializes the embedding's config, so a head restored on its own gets a fresh
    embedding of the same shape; :class:`ulmfit_keras.ULMFiTLanguageModel` rebuilds the tie to
    its backbone's embedding when it is deserialized.
    """

    def __init__(
        self,
        embedding: MaskedEmbedding,
        output_p: float = 0.0,
        use_bias: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("vocab_size", None)  # implied by the embedding (present in get_config)
        super().__init__(embedding.vocab_size, output_p, use_bias, seed, **kwargs)
        self.embedding = embedding

    def build(self, input_shape) -> None:
        if input_shape[-1] != self.embedding.emb_size:
            raise ValueError(
                f"a tied LM head needs hidden size {self.embedding.emb_size} (the embedding's), "
                f"got {input_shape[-1]}"
            )
        if not self.embedding.built:
            self.embedding.build()
        self._build_bias()
        self.built = True

    def _decoder_kernel(self):
        return ops.transpose(self.embedding.embeddings)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["embedding"] = keras.layers.serialize(self.embedding)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TiedLMHead:
        config = dict(config)
        config["embedding"] = keras.layers.deserialize(config["embedding"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class LMHead(_LMHeadBase):
    """Untied LM head with its own decoder: ``h @ kernel + bias``.

    Args:
        vocab_size: number of logits.
        output_p: fastai's ``output_p``.
        use_bias: fastai's ``out_bias``.
        kernel_initializer: defaults to PyTorch ``nn.Linear``'s.
        seed: seed of the output dropout.

    Variables: ``NAME/kernel`` ``(hidden, vocab_size)`` = fastai's ``decoder.weight`` transposed;
    ``NAME/bias`` ``(vocab_size,)``.
    """

    def __init__(
        self,
        vocab_size: int,
        output_p: float = 0.0,
        use_bias: bool = True,
        kernel_initializer: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(vocab_size, output_p, use_bias, seed, **kwargs)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or torch_linear_initializer()
        )

    def build(self, input_shape) -> None:
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.vocab_size),
            initializer=self.kernel_initializer,
        )
        self._build_bias()
        self.built = True

    def _decoder_kernel(self):
        return self.kernel

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["kernel_initializer"] = keras.initializers.serialize(self.kernel_initializer)
        return config
