"""The language model: a :class:`~ulmfit_keras.ULMFiTEncoder` backbone plus an LM head."""

from __future__ import annotations

from typing import Any

import keras

from ulmfit_core.lm_config import LMConfig, arch_defaults
from ulmfit_keras.layers.lm_head import LMHead, TiedLMHead
from ulmfit_keras.models.task_model import TaskModel
from ulmfit_keras.models.ulmfit_encoder import ULMFiTEncoder

__all__ = ["LM_HEAD_NAME", "ULMFiTLanguageModel"]

LM_HEAD_NAME = "lm_head"


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTLanguageModel(TaskModel):
    """The language model: a :class:`ULMFiTEncoder` backbone plus an LM head -> logits.

    Shares the backbone's layers (same graph from the same ``token_ids`` input): training the LM
    trains the encoder. ``logits = RNNDropout(output_p)(h) @ W + bias`` with ``W`` the embedding
    table (``tie_weights``, :class:`TiedLMHead`) or the head's own kernel (:class:`LMHead`).
    Outputs ``(batch, seq, vocab_size)`` logits carrying the encoder's mask.

    Args:
        backbone: the encoder.
        tie_weights: tie the decoder to the embedding (fastai's default).
        output_p: fastai's ``output_p`` (``None``: the recipe's).
        out_bias: decoder bias (fastai's ``out_bias``).
        seed: seed of the output dropout.
    """

    def __init__(
        self,
        backbone: ULMFiTEncoder,
        tie_weights: bool = True,
        output_p: float | None = None,
        out_bias: bool = True,
        seed: int | None = None,
        name: str = "ulmfit_lm",
        **kwargs: Any,
    ) -> None:
        if output_p is None:
            output_p = arch_defaults(backbone.arch)["output_p"]
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

    @classmethod
    def from_lm_config(
        cls,
        backbone: ULMFiTEncoder,
        config: LMConfig | dict[str, Any] | Any,
        *,
        seed: int | None = None,
        **kwargs: Any,
    ) -> ULMFiTLanguageModel:
        """The LM over ``backbone`` with the head a model config describes (``tie_weights``,
        ``output_p``, ``out_bias``); ``config`` as :meth:`ULMFiTEncoder.from_lm_config`'s."""
        spec = LMConfig.from_any(config)
        return cls(
            backbone,
            tie_weights=spec.tie_weights,
            output_p=spec.output_p,
            out_bias=spec.out_bias,
            seed=seed,
            **kwargs,
        )

    @property
    def lm_head(self) -> keras.layers.Layer:
        return self.get_layer(LM_HEAD_NAME)

    def get_config(self) -> dict[str, Any]:
        return {
            **self._task_config(),
            "tie_weights": self.tie_weights,
            "output_p": self.output_p,
            "out_bias": self.out_bias,
            "seed": self.seed,
        }
