"""The stage-05 export directory: every name in it, defined and documented here only.

The converter (``convert``) writes it, the Keras library (``ulmfit_keras.loading``) and the task
drivers read it::

    DIR/config.json                    the model config (LMConfig.to_dict()) + a "conversion"
                                       record (source and SPM sha256, layout, fixed_seq_len,
                                       parity figures, versions); readers ignore extra keys
    DIR/keras_weights/EXP.weights.h5   lm.save_weights() of the ULMFiTLanguageModel that
                                       build_encoder(config) returns (encoder + LM head)
    DIR/saved_model/                   a tf.saved_model with the signatures below; the SPM
                                       .model as an asset
    DIR/spm_model/                     the SentencePiece .model and .vocab (and its .json)
    DIR/fastai_model/                  the .pth and its .json sidecar, as given

SavedModel signatures (each also an attribute of the saved object with the same name, so that
``keras.layers.TFSMLayer`` and ``ulmfit_keras.SavedModelEncoder`` call the restored function
and can train its variables):

=========================  ===============================  =====================================
name                       input                            outputs (dict keys)
=========================  ===============================  =====================================
``string_encoder``         ``text`` strings ``(batch,)``    ``output`` (batch, seq, emb) float32,
                                                            ``numericalized`` (batch, seq) int32,
                                                            ``mask`` (batch, seq) bool
``numericalized_encoder``  ``token_ids`` ``(batch, seq)``   ``output``, ``mask``
                           int32
``spm_processor``          ``text`` strings ``(batch,)``    ``numericalized``, ``mask``
``lm_logits``              ``token_ids`` ``(batch, seq)``   ``output`` (batch, seq, vocab)
                           int32                            logits, ``mask``
=========================  ===============================  =====================================

``mask`` is ``ids != PAD_ID`` (1). With ``--fixed-seq-len N`` the sequence axis is ``N``
(post-padded with 1, longer sequences cut keeping ``<s>``); without it, ``seq`` is the longest
sequence of the batch.
"""

from __future__ import annotations

CONFIG_FILE = "config.json"
KERAS_WEIGHTS_DIR = "keras_weights"
SAVED_MODEL_DIR = "saved_model"
SPM_DIR = "spm_model"
FASTAI_DIR = "fastai_model"
WEIGHTS_SUFFIX = ".weights.h5"

SIGNATURES = ("string_encoder", "numericalized_encoder", "spm_processor", "lm_logits")
OUTPUT_KEYS = ("output", "numericalized", "mask")


def weights_file_name(exp_name: str) -> str:
    """``EXP.weights.h5``: the Keras weights file of experiment ``exp_name``."""
    return f"{exp_name}{WEIGHTS_SUFFIX}"
