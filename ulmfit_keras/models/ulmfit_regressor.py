"""Text regressor over a :class:`~ulmfit_keras.ULMFiTEncoder` backbone: the classifier's pooled
head with one linear output, and :class:`LabelNormalizer`, which scales the targets for training
and back at prediction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ulmfit_keras.models.pooled_head import PooledTaskModel, check_dropout, pooled_mlp

__all__ = ["LabelNormalizer", "ULMFiTRegressor"]


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class ULMFiTRegressor(PooledTaskModel):
    """Text regressor: the classifier's pooling and MLP with one linear output ``(batch, 1)``.

    Train it on normalized targets (:class:`LabelNormalizer`) and invert its predictions.

    Args:
        backbone: the encoder.
        hidden_dim, dropout, use_batch_norm, seed: as :class:`ULMFiTClassifier`.
    """

    def __init__(
        self,
        backbone: keras.Model,
        hidden_dim: int = 50,
        dropout: Sequence[float] = (0.4, 0.1),
        use_batch_norm: bool = True,
        seed: int | None = None,
        name: str = "ulmfit_regressor",
        **kwargs: Any,
    ) -> None:
        dropout = check_dropout(dropout)
        x = pooled_mlp(backbone.output, hidden_dim, dropout, use_batch_norm, seed)
        outputs = keras.layers.Dense(1, name="predictions")(x)
        super().__init__(inputs=backbone.input, outputs=outputs, name=name, **kwargs)
        self.backbone = backbone
        self.hidden_dim = int(hidden_dim)
        self.dropout = dropout
        self.use_batch_norm = bool(use_batch_norm)
        self.seed = seed

    def get_config(self) -> dict[str, Any]:
        return self._task_config()


@dataclass(frozen=True)
class LabelNormalizer:
    """Standardize regression targets: ``(y - mean) / std``, fitted on the training labels.

    A constant label set gets ``std = 1`` (no division by zero). Serializes to a JSON object
    so it can sit next to the model's weights.
    """

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, labels: Sequence[float] | np.ndarray) -> LabelNormalizer:
        values = np.asarray(labels, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise ValueError("cannot fit a label normalizer on no labels")
        if not np.all(np.isfinite(values)):
            raise ValueError("regression labels must be finite numbers")
        std = float(values.std())
        return cls(mean=float(values.mean()), std=std if std > 0.0 else 1.0)

    def transform(self, labels) -> np.ndarray:
        return (np.asarray(labels, dtype=np.float32) - self.mean) / self.std

    def inverse_transform(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.float32) * self.std + self.mean

    def to_json(self) -> str:
        return json.dumps({"mean": self.mean, "std": self.std})

    @classmethod
    def from_json(cls, text: str) -> LabelNormalizer:
        data = json.loads(text)
        return cls(mean=float(data["mean"]), std=float(data["std"]))
