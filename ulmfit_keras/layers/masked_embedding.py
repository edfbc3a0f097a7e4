"""The token embedding: masks the pad id (1, not 0) and applies fastai's embedding dropout."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ulmfit_core.ids import PAD_ID

__all__ = ["MaskedEmbedding"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class MaskedEmbedding(keras.layers.Layer):
    """Token embedding whose Keras mask is ``ids != pad_id``, with whole-row embedding dropout.

    fastai's pad id is 1 (0 is ``<unk>``), so ``keras.layers.Embedding(mask_zero=True)`` would mask
    the wrong token. The mask is attached to the output and propagates to every later layer.

    Embedding dropout (fastai's ``EmbeddingDropout``), in training only: each *vocabulary row*
    is zeroed with probability ``embed_p`` and the kept rows are scaled by ``1 / (1 - embed_p)``,
    so a dropped word is zero at every position of the batch. The trained variable is never
    changed; the dropped table is a temporary of the forward pass.

    Args:
        vocab_size: rows of the table.
        emb_size: width of the table.
        pad_id: the padding id, masked out.
        embed_p: probability of dropping a vocabulary row in training.
        embeddings_initializer: initializer of the table (fastai: uniform in [-0.1, 0.1]).
        seed: seed of the dropout's random generator.

    Variables: ``embeddings`` of shape ``(vocab_size, emb_size)`` (fastai's ``encoder.weight``).
    """

    def __init__(
        self,
        vocab_size: int,
        emb_size: int,
        pad_id: int = PAD_ID,
        embed_p: float = 0.0,
        embeddings_initializer: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= embed_p < 1.0:
            raise ValueError(f"embed_p must be in [0, 1), got {embed_p}")
        self.vocab_size = int(vocab_size)
        self.emb_size = int(emb_size)
        self.pad_id = int(pad_id)
        self.embed_p = float(embed_p)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer or keras.initializers.RandomUniform(-0.1, 0.1)
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape=None) -> None:
        del input_shape  # the table's shape comes from the constructor
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocab_size, self.emb_size),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs, training: bool = False):
        if inputs.dtype not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")
        table = self.embeddings
        if training and self.embed_p > 0.0:
            # One keep/drop decision per vocabulary row, broadcast over the features.
            keep = keras.random.dropout(
                ops.ones((self.vocab_size, 1), dtype=table.dtype),
                self.embed_p,
                seed=self.seed_generator,
            )
            table = table * keep
        return ops.take(table, inputs, axis=0)

    def compute_mask(self, inputs, mask=None):
        del mask  # an embedding starts the mask: ids != pad_id
        return ops.not_equal(inputs, self.pad_id)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.emb_size)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "emb_size": self.emb_size,
                "pad_id": self.pad_id,
                "embed_p": self.embed_p,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
                "seed": self.seed,
            }
        )
        return config
