"""Load a converted model for downstream work: from Keras weights, or from the SavedModel.

The export directory's layout and SavedModel signatures are documented in
:mod:`ulmfit_core.export_layout`, which names every file and signature.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import keras
from keras import ops

from ulmfit_core.export_layout import (
    CONFIG_FILE,
    KERAS_WEIGHTS_DIR,
    OUTPUT_KEYS,
    SAVED_MODEL_DIR,
    SIGNATURES,
    WEIGHTS_SUFFIX,
    weights_file_name,
)
from ulmfit_core.ids import PAD_ID
from ulmfit_core.lm_config import LMConfig
from ulmfit_keras.config import read_config
from ulmfit_keras.models.builder import build_encoder
from ulmfit_keras.models.ulmfit_encoder import ULMFiTEncoder
from ulmfit_keras.models.ulmfit_language_model import ULMFiTLanguageModel

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_FILE",
    "KERAS_WEIGHTS_DIR",
    "OUTPUT_KEYS",
    "SAVED_MODEL_DIR",
    "SIGNATURES",
    "SavedModelEncoder",
    "find_weights_file",
    "load_encoder",
    "load_language_model",
]

# Endpoints whose input is token ids, so that the mask can be recomputed from the input.
ID_ENDPOINTS = ("numericalized_encoder", "lm_logits")


def find_weights_file(export_dir: str | os.PathLike, weights_name: str | None = None) -> Path:
    """``DIR/keras_weights/NAME.weights.h5``; without a name, the only such file.

    Raises:
        FileNotFoundError: no weights file (or not the named one).
        ValueError: several files and no name to choose one.
    """
    weights_dir = Path(export_dir) / KERAS_WEIGHTS_DIR
    if weights_name is not None:
        name = (
            weights_name
            if weights_name.endswith(WEIGHTS_SUFFIX)
            else weights_file_name(weights_name)
        )
        path = weights_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"Keras weights {path} not found")
        return path
    found = sorted(weights_dir.glob(f"*{WEIGHTS_SUFFIX}"))
    if not found:
        raise FileNotFoundError(f"no *{WEIGHTS_SUFFIX} file in {weights_dir}")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"several weights files in {weights_dir} ({names}): pass weights_name")
    return found[0]


def load_language_model(
    export_dir: str | os.PathLike,
    fixed_seq_len: int | None = None,
    weights_name: str | None = None,
    seed: int | None = None,
) -> tuple[ULMFiTEncoder, ULMFiTLanguageModel]:
    """Rebuild ``(encoder, lm)`` from ``DIR/config.json`` and ``DIR/keras_weights/``.

    Args:
        export_dir: the converter's output directory.
        fixed_seq_len: static input length of the rebuilt models (``None``: any).
        weights_name: which ``keras_weights/*.weights.h5`` when there are several.
        seed: base seed of the dropouts used in fine-tuning.
    """
    export_dir = Path(export_dir)
    config: LMConfig = read_config(export_dir / CONFIG_FILE)
    weights = find_weights_file(export_dir, weights_name)
    encoder, lm = build_encoder(config, fixed_seq_len=fixed_seq_len, seed=seed)
    lm.load_weights(weights)  # raises on a missing or mis-shaped variable
    logger.info("loaded %s encoder from %s", config.arch, weights)
    return encoder, lm


def load_encoder(
    export_dir: str | os.PathLike,
    fixed_seq_len: int | None = None,
    weights_name: str | None = None,
    seed: int | None = None,
) -> ULMFiTEncoder:
    """The encoder of :func:`load_language_model` (ids -> masked hidden states), trainable."""
    encoder, _ = load_language_model(export_dir, fixed_seq_len, weights_name, seed)
    return encoder


class _OptimizerSafeTFSMLayer(keras.layers.TFSMLayer):
    """``TFSMLayer`` whose tracked variables have names optimizers accept.

    Keras 3.15 names them after the SavedModel's ``tf.Variable`` names, ``"a/b:0"`` -> ``"a_b:0"``;
    optimizers with slot variables (Adam, SGD with momentum) then build names like
    ``"a_b:0_momentum"``, which TensorFlow rejects as a scope name. Dropping the ``:0`` suffix
    fixes that; the variables themselves are the SavedModel's, as in ``TFSMLayer``.
    """

    def _add_existing_weight(self, weight) -> None:
        variable = keras.Variable(
            initializer=weight,
            trainable=weight.trainable,
            dtype=weight.dtype,
            shape=weight.shape,
            name=weight.name.split(":")[0].replace("/", "_"),
        )
        self._track_variable(variable)


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class SavedModelEncoder(keras.layers.Layer):
    """The exported SavedModel as a trainable Keras layer whose output carries the Keras mask.

    ``keras.layers.TFSMLayer`` (Keras 3's replacement for ``hub.KerasLayer``) returns the
    signature's output dict and no mask. This layer calls an endpoint that takes token ids
    (``numericalized_encoder`` or ``lm_logits``), returns its ``output`` and attaches the mask
    ``ids != pad_id``, so masking layers downstream (pooling, attention) see the padding. Its
    variables are the SavedModel's, trainable when ``trainable=True``; the SavedModel's functions
    run in inference mode (no dropout), unless ``call_training_endpoint`` names one for training.

    For text input, numericalize first (the ``spm_processor`` endpoint or
    :class:`~ulmfit_keras.SPMNumericalizer`) and feed the ids.

    Args:
        saved_model_dir: ``DIR/saved_model`` (or ``DIR``, which holds it).
        call_endpoint: the endpoint; must take token ids.
        call_training_endpoint: optional endpoint for ``training=True``.
        output_key: the output to return.
        pad_id: padding id.

    Loading a model that contains this layer from a ``.keras`` file runs the SavedModel's graph,
    so, like ``TFSMLayer``, it needs ``safe_mode=False``.
    """

    def __init__(
        self,
        saved_model_dir: str | os.PathLike,
        call_endpoint: str = "numericalized_encoder",
        call_training_endpoint: str | None = None,
        output_key: str = "output",
        pad_id: int = PAD_ID,
        trainable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(trainable=trainable, **kwargs)
        path = Path(saved_model_dir)
        if (path / SAVED_MODEL_DIR / "saved_model.pb").is_file():
            path = path / SAVED_MODEL_DIR
        if call_endpoint not in ID_ENDPOINTS:
            raise ValueError(
                f"call_endpoint {call_endpoint!r} does not take token ids: use one of "
                f"{ID_ENDPOINTS} (numericalize text first)"
            )
        self.saved_model_dir = str(path)
        self.call_endpoint = call_endpoint
        self.call_training_endpoint = call_training_endpoint
        self.output_key = output_key
        self.pad_id = int(pad_id)
        self.saved_model_layer = _OptimizerSafeTFSMLayer(
            self.saved_model_dir,
            call_endpoint=call_endpoint,
            call_training_endpoint=call_training_endpoint,
            trainable=trainable,
            name="saved_model",
        )
        self.supports_masking = True

    def call(self, inputs, training: bool = False):
        ids = ops.cast(inputs, "int32")
        outputs = self.saved_model_layer(ids, training=training)
        if isinstance(outputs, dict):
            if self.output_key not in outputs:
                raise KeyError(
                    f"endpoint {self.call_endpoint!r} has no output {self.output_key!r}; "
                    f"it has {sorted(outputs)}"
                )
            return outputs[self.output_key]
        return outputs

    def compute_mask(self, inputs, mask=None):
        del mask  # recomputed from the ids, as the embedding inside the SavedModel does
        return ops.not_equal(inputs, self.pad_id)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "saved_model_dir": self.saved_model_dir,
                "call_endpoint": self.call_endpoint,
                "call_training_endpoint": self.call_training_endpoint,
                "output_key": self.output_key,
                "pad_id": self.pad_id,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SavedModelEncoder:
        # TFSMLayer.from_config refuses in safe mode (loading runs the SavedModel's graph);
        # ask it, so that this layer is no way around that check.
        keras.layers.TFSMLayer.from_config(
            {
                "filepath": config["saved_model_dir"],
                "call_endpoint": config["call_endpoint"],
                "call_training_endpoint": config.get("call_training_endpoint"),
            }
        )
        return cls(**config)
