"""Text -> token ids in the graph, with ``tensorflow_text``'s SentencePiece op."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from ulmfit_core.ids import PAD_ID

__all__ = ["SPMNumericalizer"]


def _model_bytes(spm_model: bytes | str | os.PathLike) -> bytes:
    if isinstance(spm_model, bytes | bytearray):
        return bytes(spm_model)
    path = Path(spm_model)
    if not path.is_file():
        raise FileNotFoundError(f"SentencePiece model {path} not found")
    return path.read_bytes()


@keras.saving.register_keras_serializable(package="ulmfit_keras")
class SPMNumericalizer(keras.layers.Layer):
    """Tokenize strings into SentencePiece ids, exactly as ``SentencePieceProcessor.encode``.

    ``call(strings)`` with a 1-D string tensor (or a Python list of strings) returns:

    * ``fixed_seq_len=None``: a ``tf.RaggedTensor`` ``(batch, None)`` of int32 ids;
    * ``fixed_seq_len=N``: a dense ``(batch, N)`` int32 tensor, padded with ``pad_id`` (1) at the
      end. Longer sequences are cut to their first ``N`` ids, so a truncated sequence keeps its
      BOS but loses its EOS (as the seed guide's export did).

    The ids are those of ``encode(text, add_bos=add_bos, add_eos=add_eos)`` (``<s>`` = 2,
    ``</s>`` = 3). Works eagerly, in ``tf.function`` and in ``tf.data``. It returns TensorFlow
    tensors (not backend tensors): the TensorFlow backend is required.

    Args:
        spm_model: the ``.model`` file's bytes or its path.
        add_bos, add_eos: add ``<s>`` / ``</s>``.
        fixed_seq_len: pad/truncate to this length, or ``None`` for ragged ids.
        pad_id: padding id.

    ``get_config`` stores the model itself (base64), so a saved layer needs no external file.
    """

    def __init__(
        self,
        spm_model: bytes | str | os.PathLike,
        add_bos: bool = True,
        add_eos: bool = True,
        fixed_seq_len: int | None = None,
        pad_id: int = PAD_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "int32")
        super().__init__(trainable=False, **kwargs)
        # Keep TensorFlow string tensors as they are (keras-hub's preprocessing-layer settings).
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        if fixed_seq_len is not None and fixed_seq_len < 1:
            raise ValueError(f"fixed_seq_len must be positive, got {fixed_seq_len}")
        self.spm_model = _model_bytes(spm_model)
        self.add_bos = bool(add_bos)
        self.add_eos = bool(add_eos)
        self.fixed_seq_len = fixed_seq_len
        self.pad_id = int(pad_id)
        self._tokenizer = tf_text.SentencepieceTokenizer(
            model=self.spm_model, out_type=tf.int32, add_bos=self.add_bos, add_eos=self.add_eos
        )
        self.built = True

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.vocab_size())

    def call(self, inputs):
        strings = tf.convert_to_tensor(inputs, dtype=tf.string)
        ids = self._tokenizer.tokenize(strings)
        if self.fixed_seq_len is None:
            return ids
        if strings.shape.rank == 0:
            ids = tf.RaggedTensor.from_tensor(ids[tf.newaxis])
        return ids.to_tensor(default_value=self.pad_id, shape=[None, self.fixed_seq_len])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "spm_model": base64.b64encode(self.spm_model).decode("ascii"),
                "add_bos": self.add_bos,
                "add_eos": self.add_eos,
                "fixed_seq_len": self.fixed_seq_len,
                "pad_id": self.pad_id,
            }
        )
        config.pop("trainable", None)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SPMNumericalizer:
        config = dict(config)
        config["spm_model"] = base64.b64decode(config["spm_model"])
        return cls(**config)
