"""The verification steps of a conversion: each runs its checks and returns what it found.

:func:`verify_in_memory` compares the freshly ported Keras LM with the PyTorch reference, layer
by layer, and checks masking; :func:`verify_export` reloads what was written (the Keras weights
through the downstream loader, the SavedModel with ``tf.saved_model.load``) and compares it with
the reference again. Both raise :class:`~convert.verify.ParityError` above the tolerance and
return frozen results that :mod:`convert.pipeline` collects; neither changes its inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.reference import ReferenceLM, build_reference, layer_names
from convert.tokenizer import SpmModel
from convert.verify import (
    SENTENCES,
    ParityError,
    ParityReport,
    check,
    compare_outputs,
    keras_probe,
    masking_report,
    merge_reports,
    pad_batch,
    parity_batches,
    parity_report,
)
from ulmfit_core.export_layout import SAVED_MODEL_DIR
from ulmfit_core.ids import PAD_ID
from ulmfit_torch.state_dict import LMState

logger = logging.getLogger(__name__)

__all__ = ["InMemoryChecks", "verify_export", "verify_in_memory"]


@dataclass(frozen=True)
class InMemoryChecks:
    """What :func:`verify_in_memory` built and measured.

    ``reports`` holds ``"keras"`` (per layer, Keras vs PyTorch) and ``"masking"`` (post-padded
    vs unpadded Keras outputs); ``reference`` and ``batches`` are reused by the export checks.
    """

    reference: ReferenceLM
    batches: tuple[np.ndarray, ...]
    reports: Mapping[str, ParityReport]


def verify_in_memory(
    state: LMState, lm: Any, spm: SpmModel, *, seed: int, tolerance: float
) -> InMemoryChecks:
    """The ported Keras LM ``lm`` vs the PyTorch reference of ``state``, and its masking.

    Raises:
        ParityError: a max ``|diff|`` above ``tolerance``.
    """
    config = state.config
    reference = build_reference(state)
    batches = parity_batches(config.vocab_size, spm.encode, seed=seed)
    report = check(parity_report(reference, lm, batches), tolerance)
    logger.info("%s", report.format_table())
    names = layer_names(config)
    probe = keras_probe(lm, config)
    rows = [batch[0] for batch in batches if batch.shape[0] == 1]
    masking = check(masking_report(probe, rows, names[-2:]), tolerance)
    logger.info("%s", masking.format_table())
    return InMemoryChecks(reference, tuple(batches), {"keras": report, "masking": masking})


def _torch_outputs(reference: ReferenceLM) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """``ids -> {"encoder_output", "logits"}`` of the PyTorch reference."""
    last = layer_names(reference.config)[-2]

    def run(ids: np.ndarray) -> dict[str, np.ndarray]:
        out = reference.run(ids)
        return {"encoder_output": out[last], "logits": out["logits"]}

    return run


def _check_reloaded_keras(
    reference: ReferenceLM, out_dir: Path, batches: Sequence[np.ndarray]
) -> ParityReport:
    """``keras_weights/`` + ``config.json``, rebuilt by the downstream loader, vs PyTorch."""
    from ulmfit_keras import load_language_model

    _, reloaded_lm = load_language_model(out_dir)
    what = "reloaded keras_weights vs pytorch"
    return parity_report(reference, reloaded_lm, batches, what=what)


def _check_saved_model(
    reference: ReferenceLM,
    spm: SpmModel,
    loaded: Any,
    batches: Sequence[np.ndarray],
    fixed_seq_len: int | None,
) -> ParityReport:
    """The SavedModel's signatures vs PyTorch.

    ``numericalized_encoder`` and ``lm_logits`` get each batch post-padded to the fixed length
    (when set); ``string_encoder`` and ``spm_processor`` must give exactly sentencepiece's ids
    (with BOS/EOS, cut and padded the same way) for the real sentences, and ``string_encoder``'s
    output at valid positions must match each sentence run alone through PyTorch.

    Raises:
        ParityError: the tokenization or the mask differs (the numbers are checked by the
            caller, with the tolerance).
    """
    import tensorflow as tf

    torch_run = _torch_outputs(reference)

    def id_pairs():
        for ids in batches:
            token_ids = tf.constant(pad_batch(list(ids), fixed_seq_len))  # post-pad with 1
            width = ids.shape[1]
            got = {
                "encoder_output": loaded.numericalized_encoder(token_ids)["output"][:, :width],
                "logits": loaded.lm_logits(token_ids)["output"][:, :width],
            }
            yield got, torch_run(ids)

    id_report = compare_outputs(id_pairs(), ["encoder_output", "logits"], "id signatures")

    n = fixed_seq_len
    expected = [np.asarray(ids[:n] if n else ids, np.int32) for ids in spm.encode(SENTENCES)]
    want_ids = pad_batch(expected, n)
    text = tf.constant(list(SENTENCES))
    encoded = loaded.string_encoder(text)
    for signature, result in (
        ("string_encoder", encoded),
        ("spm_processor", loaded.spm_processor(text)),
    ):
        got_ids = result["numericalized"].numpy()
        if got_ids.shape != want_ids.shape or not np.array_equal(got_ids, want_ids):
            raise ParityError(
                f"the SavedModel's {signature} tokenizes differently from sentencepiece: "
                f"{got_ids.tolist()} vs {want_ids.tolist()}"
            )
        if not np.array_equal(result["mask"].numpy(), want_ids != PAD_ID):
            raise ParityError(f"the SavedModel's {signature} mask is not numericalized != 1")
    hidden = encoded["output"].numpy()
    text_pairs = (
        (
            {"string_encoder": hidden[i, : len(ids)]},
            {"string_encoder": torch_run(ids[None, :])["encoder_output"][0]},
        )
        for i, ids in enumerate(expected)
    )
    note = f"string_encoder/spm_processor ids equal sentencepiece's on {len(expected)} sentences"
    text_report = compare_outputs(text_pairs, ["string_encoder"], "text", notes=(note,))
    return merge_reports("reloaded saved_model vs pytorch", id_report, text_report)


def verify_export(
    in_memory: InMemoryChecks,
    spm: SpmModel,
    out_dir: Path,
    *,
    fixed_seq_len: int | None,
    tolerance: float,
) -> dict[str, ParityReport]:
    """Reload the Keras weights and SavedModel written in ``out_dir``; check them against PyTorch.

    Returns:
        ``{"reloaded_keras": ..., "saved_model": ...}``.

    Raises:
        ParityError: a reloaded artifact differs from PyTorch beyond ``tolerance``, or the
            SavedModel tokenizes differently from sentencepiece.
    """
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the SentencePiece op for loading

    # A fixed-length SavedModel takes at most that many ids: cut the batches to it.
    n = fixed_seq_len
    batches = [ids if n is None else ids[:, :n] for ids in in_memory.batches]
    reference = in_memory.reference
    keras_report = check(_check_reloaded_keras(reference, out_dir, batches), tolerance)
    logger.info("%s", keras_report.format_table())
    loaded = tf.saved_model.load(str(out_dir / SAVED_MODEL_DIR))
    saved_report = check(_check_saved_model(reference, spm, loaded, batches, n), tolerance)
    logger.info("%s", saved_report.format_table())
    return {"reloaded_keras": keras_report, "saved_model": saved_report}
