"""Stage 05: convert a fastai language model (``.pth``) into Keras 3 weights and a SavedModel.

Runs in the TensorFlow environment. Imports TensorFlow (with ``tensorflow_text``), Keras,
sentencepiece, numpy and torch on the CPU (to read tensors and to run the PyTorch reference
forward that proves parity), and from this project :mod:`ulmfit_core`, :mod:`ulmfit_keras`,
:mod:`ulmfit_torch` and :func:`pretraining_utils.spm.vocab_text` (sentencepiece only); never
fastai. The pipeline, one small function per step (the transformers/keras-hub converter shape):

1. :func:`convert.pipeline.read_checkpoint`: the ``.pth`` through the one state-dict reader
   (:func:`ulmfit_torch.state_dict.read_lm_state`: the file's layout, the model config from the
   keys and shapes merged with the ``.json`` sidecar, the keys checked fail-hard), checked
   against the CLI flags;
2. :func:`convert.mapping.port_weights`: the declarative key table, one named Keras variable at
   a time;
3. :func:`convert.checks.verify_in_memory` (:func:`convert.verify.parity_report` /
   :func:`convert.verify.check`): PyTorch vs Keras, layer by layer, before anything is saved;
4. :mod:`convert.export`: the output tree and the SavedModel (:mod:`convert.tokenizer` checks and
   copies the SPM model); :mod:`convert.pipeline` writes it beside ``--out-path``, reloads and
   re-checks what it wrote (:func:`convert.checks.verify_export`), then renames it into place.

Also: :mod:`convert.reference` (the PyTorch forward, torch only) and :mod:`convert.testing`
(random fastai-layout state dicts for tests and benchmarks). Stages 06/07 (perplexity, trying
an export) are in :mod:`evaluation`.

Public API: :class:`ConvertConfig`, :func:`convert`, :func:`prepare`, :func:`port_weights`,
:func:`weight_plan`, :func:`build_reference`, :func:`parity_report`, :func:`check`,
:class:`ParityReport`, :class:`ParityError`.
"""

import importlib
from typing import Any

# Where each public name lives. Imported on first use (PEP 562), so that the modules without
# TensorFlow (mapping, reference) also import in the fastai environment.
_EXPORTS = {
    "port_weights": "convert.mapping",
    "weight_plan": "convert.mapping",
    "ReferenceLM": "convert.reference",
    "build_reference": "convert.reference",
    "ParityError": "convert.verify",
    "ParityReport": "convert.verify",
    "check": "convert.verify",
    "masking_report": "convert.verify",
    "parity_report": "convert.verify",
    "ConvertConfig": "convert.pipeline",
    "ConvertSummary": "convert.pipeline",
    "Prepared": "convert.pipeline",
    "convert": "convert.pipeline",
    "prepare": "convert.pipeline",
    "read_checkpoint": "convert.pipeline",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'convert' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ConvertConfig",
    "ConvertSummary",
    "ParityError",
    "ParityReport",
    "Prepared",
    "ReferenceLM",
    "build_reference",
    "check",
    "convert",
    "masking_report",
    "parity_report",
    "port_weights",
    "prepare",
    "read_checkpoint",
    "weight_plan",
]
