"""Stage 05: convert a fastai language model (``.pth``) into Keras 3 weights and a SavedModel.

Runs in the TensorFlow environment. torch is used only to read tensors and to run the PyTorch
reference forward that proves parity; fastai is never imported. The pipeline, one small function
per step (the transformers/keras-hub converter shape):

1. :func:`convert.layout.convert_config`: the architecture and sizes from the state dict's keys
   and shapes, merged with the ``.json`` sidecar, checked against the CLI flags;
2. :func:`convert.mapping.port_weights`: the declarative key table, one named Keras variable at
   a time;
3. :func:`convert.verify.parity_report` / :func:`convert.verify.check`: PyTorch vs Keras,
   layer by layer, before anything is saved;
4. :mod:`convert.export`: the output tree and the SavedModel (:mod:`convert.tokenizer` checks and
   copies the SPM model); :mod:`convert.pipeline` writes it beside ``--out-path``, reloads and
   re-checks what it wrote, then renames it into place.

Also: :mod:`convert.reference` (the PyTorch forward, torch only), :mod:`convert.evaluate`
(stage 06: perplexity in PyTorch and TF) and :mod:`convert.testing` (random fastai-layout state
dicts for tests and benchmarks).

Public API: :class:`ConvertConfig`, :func:`convert`, :func:`prepare`, :func:`convert_config`,
:func:`port_weights`, :func:`weight_plan`, :func:`build_reference`, :func:`parity_report`,
:func:`check`, :class:`ParityReport`, :class:`ParityError`, :func:`evaluate_lm`.
"""

import importlib
from typing import Any

# Where each public name lives. Imported on first use (PEP 562), so that the torch-only modules
# (layout, mapping, reference) also import in the fastai environment, which has no TensorFlow.
_EXPORTS = {
    "CheckpointLayout": "convert.layout",
    "convert_config": "convert.layout",
    "detect_layout": "convert.layout",
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
    "EvalConfig": "convert.evaluate",
    "EvalSummary": "convert.evaluate",
    "evaluate_lm": "convert.evaluate",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'convert' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CheckpointLayout",
    "ConvertConfig",
    "ConvertSummary",
    "EvalConfig",
    "EvalSummary",
    "ParityError",
    "ParityReport",
    "Prepared",
    "ReferenceLM",
    "build_reference",
    "check",
    "convert",
    "convert_config",
    "detect_layout",
    "evaluate_lm",
    "masking_report",
    "parity_report",
    "port_weights",
    "prepare",
    "weight_plan",
]
