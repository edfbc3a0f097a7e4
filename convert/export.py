"""Write the conversion's output tree, and the TensorFlow SavedModel in it.

Layout and signatures: :mod:`ulmfit_core.export_layout` (the one place they are named).

Text is tokenized in the graph by ``tensorflow_text.SentencepieceTokenizer`` exactly as
``SentencePieceProcessor.encode(text, add_bos=True, add_eos=True)``; ``mask`` is ``ids != 1``.

*Fixed* (``--fixed-seq-len N``): ``seq`` is the static ``N``; token sequences are post-padded
with 1 to ``N``, longer ones cut to their first ``N`` ids (keeping ``<s>``, losing ``</s>``).
The id signatures accept exactly ``N`` columns.

*Ragged* (no ``--fixed-seq-len``): the sequence axis is dynamic. A SavedModel signature cannot
return a ``tf.RaggedTensor``, so "ragged" means: the tokenizer's ragged ids are post-padded with
1 to the longest sequence *of the batch* and returned dense with ``mask`` marking the valid
positions (``tf.RaggedTensor.from_tensor(output, lengths=reduce_sum(mask, 1))`` gives the
ragged view back). The id signatures accept any number of columns. Padded positions do not
change the outputs at valid positions (the Keras mask), and their ``output`` is 0.

The tokenizer op carries the model's bytes (that is how ``tensorflow_text`` builds it); the
``.model`` file itself is also a SavedModel asset (``loaded.spm_model.asset_path``), so the
SavedModel directory is self-describing. Loading needs only ``tensorflow`` and
``import tensorflow_text`` (which registers the op), no project code.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import tensorflow as tf

from ulmfit_core.artifacts import write_json
from ulmfit_core.export_layout import (
    CONFIG_FILE,
    FASTAI_DIR,
    KERAS_WEIGHTS_DIR,
    SAVED_MODEL_DIR,
    weights_file_name,
)
from ulmfit_keras import PAD_ID, SPMNumericalizer

logger = logging.getLogger(__name__)

__all__ = [
    "LMExportModule",
    "write_config",
    "write_fastai_copy",
    "write_keras_weights",
    "write_saved_model",
]


class LMExportModule(tf.Module):
    """The SavedModel's root object: the Keras encoder and LM, the tokenizer, four signatures.

    Args:
        encoder: the Keras encoder (ids -> hidden states, masked).
        lm: the Keras LM sharing the encoder's layers (ids -> logits).
        spm_model_path: the SentencePiece ``.model`` (tokenizer, and a SavedModel asset).
        fixed_seq_len: static sequence length, or ``None`` for dynamic ("ragged") batches.
    """

    def __init__(
        self,
        encoder: Any,
        lm: Any,
        spm_model_path: str | Path,
        fixed_seq_len: int | None = None,
    ) -> None:
        super().__init__(name="ulmfit_lm_export")
        self.encoder = encoder
        self.lm = lm
        self.spm_model = tf.saved_model.Asset(str(spm_model_path))
        self.numericalizer = SPMNumericalizer(
            spm_model_path, add_bos=True, add_eos=True, fixed_seq_len=fixed_seq_len
        )
        text = tf.TensorSpec([None], tf.string, name="text")
        ids = tf.TensorSpec([None, fixed_seq_len], tf.int32, name="token_ids")
        # tf.functions as attributes: saved with the object, callable after tf.saved_model.load
        # under the same names as the signatures (TFSMLayer looks for attributes first).
        self.string_encoder = tf.function(self._string_encoder, input_signature=[text])
        self.numericalized_encoder = tf.function(self._numericalized_encoder, input_signature=[ids])
        self.spm_processor = tf.function(self._spm_processor, input_signature=[text])
        self.lm_logits = tf.function(self._lm_logits, input_signature=[ids])

    def _numericalize(self, text: tf.Tensor) -> tf.Tensor:
        ids = self.numericalizer(text)
        if isinstance(ids, tf.RaggedTensor):  # dynamic length: pad to the batch's longest
            ids = ids.to_tensor(default_value=PAD_ID)
        return ids

    def _string_encoder(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = self._numericalize(text)
        output = self.encoder(ids, training=False)
        return {"output": output, "numericalized": ids, "mask": tf.not_equal(ids, PAD_ID)}

    def _numericalized_encoder(self, token_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        output = self.encoder(token_ids, training=False)
        return {"output": output, "mask": tf.not_equal(token_ids, PAD_ID)}

    def _spm_processor(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = self._numericalize(text)
        return {"numericalized": ids, "mask": tf.not_equal(ids, PAD_ID)}

    def _lm_logits(self, token_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        output = self.lm(token_ids, training=False)
        return {"output": output, "mask": tf.not_equal(token_ids, PAD_ID)}

    def signatures(self) -> dict[str, Any]:
        return {
            "string_encoder": self.string_encoder,
            "numericalized_encoder": self.numericalized_encoder,
            "spm_processor": self.spm_processor,
            "lm_logits": self.lm_logits,
        }


def write_keras_weights(lm: Any, out_dir: Path, exp_name: str) -> Path:
    """``out_dir/keras_weights/EXP.weights.h5`` (``lm.save_weights``; encoder + LM head)."""
    target = out_dir / KERAS_WEIGHTS_DIR / weights_file_name(exp_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    lm.save_weights(target)
    return target


def write_saved_model(
    encoder: Any, lm: Any, spm_model_path: Path, out_dir: Path, fixed_seq_len: int | None
) -> Path:
    """``out_dir/saved_model/``: an :class:`LMExportModule` with its four signatures."""
    target = out_dir / SAVED_MODEL_DIR
    module = LMExportModule(encoder, lm, spm_model_path, fixed_seq_len)
    tf.saved_model.save(module, str(target), signatures=module.signatures())
    return target


def write_fastai_copy(pth_path: Path, out_dir: Path, sidecar: Path | None) -> Path:
    """``out_dir/fastai_model/``: the ``.pth`` as given, and its ``.json`` when present."""
    target = out_dir / FASTAI_DIR
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pth_path, target / pth_path.name)
    if sidecar is not None and sidecar.is_file():
        shutil.copyfile(sidecar, target / sidecar.name)
    return target / pth_path.name


def write_config(out_dir: Path, config: dict[str, Any]) -> Path:
    """``out_dir/config.json``."""
    target = out_dir / CONFIG_FILE
    write_json(target, config)
    return target
