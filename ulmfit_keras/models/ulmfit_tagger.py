"""Sequence tagger over a :class:`~ulmfit_keras.ULMFiTEncoder` backbone: a per-token head."""

from __future__ import annotations

from typing import Any

import keras

from ulmfit_keras.models.task_model import TaskModel

__all__ = ["ULMFiTTagger"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTTagger(TaskModel):
    """Sequence tagger: ``backbone`` -> Dropout -> per-token Dense(num_labels).

    Outputs ``(batch, seq, num_labels)`` probabilities (or logits with ``activation=None``)
    carrying the encoder's padding mask. Train with :class:`MaskedSparseCategoricalCrossentropy`
    on labels from :func:`align_word_labels` / :func:`pad_aligned`.

    Args:
        backbone: the encoder.
        num_labels: number of tags.
        dropout: dropout on the encoder outputs before the Dense.
        activation: of the output (``"softmax"``; ``None`` for logits).
        seed: seed of the dropout.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_labels: int,
        dropout: float = 0.1,
        activation: str | None = "softmax",
        seed: int | None = None,
        name: str = "ulmfit_tagger",
        **kwargs: Any,
    ) -> None:
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        x = keras.layers.Dropout(dropout, seed=seed, name="tagger_dropout")(backbone.output)
        outputs = keras.layers.Dense(num_labels, activation=activation, name="tag_predictions")(x)
        super().__init__(inputs=backbone.input, outputs=outputs, name=name, **kwargs)
        self.backbone = backbone
        self.num_labels = int(num_labels)
        self.dropout = float(dropout)
        self.activation = activation
        self.seed = seed

    def get_config(self) -> dict[str, Any]:
        return {
            **self._task_config(),
            "num_labels": self.num_labels,
            "dropout": self.dropout,
            "activation": self.activation,
            "seed": self.seed,
        }
