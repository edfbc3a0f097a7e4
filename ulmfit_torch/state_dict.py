"""The one reader of fastai language-model state dicts: layout, model config, checked tensors.

:func:`read_lm_state` is the only place a fastai LM state dict is interpreted. It

1. detects the file's :class:`CheckpointLayout`: the key family (fastai 2.8 AWD-LSTM, fastai
   2.2.7 AWD-LSTM or AWD-QRNN, :mod:`ulmfit_torch.fastai_keys`), how the tensors were packed
   (``Learner.save`` or a bare state dict) and which stale copies it carries;
2. reads the model from the weights (:func:`infer_config`): the number of layers from the keys;
   the sizes, the QRNN windows and whether the decoder is tied from the shapes;
3. merges the ``.json`` sidecar (:func:`resolve_config`), which adds what the weights cannot tell
   (dropouts, the SPM model's hash); where both speak, they must agree;
4. checks the keys fail-hard (:func:`ulmfit_torch.fastai_keys.check_keys`): every tensor used or
   explicitly ignored.

The model's architecture lives in the resulting :class:`~ulmfit_core.lm_config.LMConfig` only;
the layout says what is specific to the file. The converter (stage 05), the perplexity check
(stage 06) and stage 04's fine-tuning from a pretrained ``.pth`` all read through here.

numpy and :mod:`ulmfit_core` only (tensors are duck-typed): never fastai or TensorFlow.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ulmfit_core.errors import InputError
from ulmfit_core.ids import SPECIAL_IDS
from ulmfit_core.lm_config import LMConfig, qrnn_windows, sidecar_path
from ulmfit_torch.fastai_keys import (
    FASTAI_28_AWD_LSTM,
    FASTAI_227_AWD_LSTM,
    FASTAI_227_AWD_QRNN,
    LAYOUTS,
    check_keys,
    source_arrays,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointLayout",
    "LMState",
    "detect_layout",
    "infer_config",
    "read_lm_state",
    "read_sidecar",
    "resolve_config",
]

_LAYER_KEY = re.compile(r"^0\.rnns\.(\d+)\.")
_LSTM_MARK = "weight_hh_l0_raw"  # only AWD-LSTM layers have it
_QRNN_MARK = "layers.0.linear.weight_raw"  # only AWD-QRNN layers have it
_DROPPED_COPIES = ("module.weight_hh_l0", "layers.0.linear.module.weight")  # older WeightDropout
_EMBEDDING = "0.encoder.weight"

LEARNER_SAVE = "Learner.save"
BARE = "state dict"
CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class CheckpointLayout:
    """What is specific to the checkpoint file (the model itself is the :class:`LMConfig`).

    Args:
        name: the key family, e.g. ``"fastai-2.8-awd-lstm"`` (:mod:`ulmfit_torch.fastai_keys`).
        container: ``"Learner.save"`` (``{'model', 'opt'}``), ``"state dict"`` (bare, or
            ``{'model'}`` alone) or ``"checkpoint"`` (``'model'`` and other training state), as
            far as the object given to :func:`read_lm_state` tells.
        dropped_copies: the file holds ``WeightDropout``'s stale dropped copies
            (``module.weight_hh_l0`` / ``layers.0.linear.module.weight``).
        extra: the entries besides ``'model'`` (training state, never read).
    """

    name: str
    container: str = BARE
    dropped_copies: bool = False
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class LMState:
    """A read and checked fastai LM state dict.

    Args:
        config: the model (sizes from the weights, the rest from the sidecar when there is one).
        layout: what is specific to the file.
        tensors: the tensors the model's parameters come from, by fastai key, in the key table's
            order: no ignored key (no alias of the embedding, no stale copy) is among them.
        ignored: the keys of the file that were read but not used (sorted).
        source: the file, for messages.
    """

    config: LMConfig
    layout: CheckpointLayout
    tensors: Mapping[str, Any]
    ignored: tuple[str, ...]
    source: str


def _split(checkpoint: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, tuple[str, ...]]:
    """(state dict, container, extra entries) of a state dict or of ``load_pth``'s result."""
    model = checkpoint.get("model") if isinstance(checkpoint, Mapping) else None
    if not isinstance(model, Mapping):
        return checkpoint, BARE, ()
    extra = tuple(sorted(key for key in checkpoint if key != "model"))
    if not extra:
        return model, BARE, extra
    return model, LEARNER_SAVE if extra == ("opt",) else CHECKPOINT, extra


def _shape(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(int(d) for d in state_dict[key].shape)


def _layer_indices(state_dict: Mapping[str, Any], source: str) -> list[int]:
    layers = sorted({int(m.group(1)) for key in state_dict if (m := _LAYER_KEY.match(key))})
    if not layers:
        raise InputError(f"{source}: no recurrent layers (no 0.rnns.* keys)")
    if layers != list(range(len(layers))):
        raise InputError(
            f"{source}: recurrent layers {layers} are not numbered 0..{len(layers) - 1}"
        )
    return layers


def detect_layout(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> CheckpointLayout:
    """The key family and packing of a fastai LM state dict (or of ``load_pth``'s result).

    Raises:
        InputError: not a fastai AWD-LSTM/AWD-QRNN language model.
    """
    state_dict, container, extra = _split(checkpoint)
    if _EMBEDDING not in state_dict:
        raise InputError(
            f"{source}: no {_EMBEDDING}: not a fastai language model state dict "
            f"(keys start with {sorted(state_dict)[:3]})"
        )
    lstm = any(key.endswith(_LSTM_MARK) for key in state_dict)
    qrnn = any(key.endswith(_QRNN_MARK) for key in state_dict)
    if lstm == qrnn:
        what = "both AWD-LSTM and AWD-QRNN" if lstm else "neither AWD-LSTM nor AWD-QRNN"
        raise InputError(
            f"{source}: not a fastai AWD-LSTM/AWD-QRNN language model: its keys have {what} "
            f"layers (looked for *.{_LSTM_MARK} and *.{_QRNN_MARK})"
        )
    dropped = any(key.endswith(_DROPPED_COPIES) for key in state_dict)
    name = FASTAI_28_AWD_LSTM
    if qrnn:
        name = FASTAI_227_AWD_QRNN
    elif dropped:  # only older fastai's WeightDropout wrote module.weight_hh_l0
        name = FASTAI_227_AWD_LSTM
    return CheckpointLayout(name, container, dropped, extra)


def _layer_io(state_dict: Mapping[str, Any], arch: str, layer: int, source: str) -> tuple[int, int]:
    """(n_in * window, n_out) of one recurrent layer, from its input weight."""
    if arch == "awd-lstm":
        key = f"0.rnns.{layer}.module.weight_ih_l0"
        gates = 4
    else:
        key = f"0.rnns.{layer}.layers.0.linear.weight_raw"
        gates = 3
    if key not in state_dict:
        raise InputError(f"{source}: missing state-dict key {key}")
    shape = _shape(state_dict, key)
    if len(shape) != 2 or shape[0] % gates:
        raise InputError(f"{source}: {key} has shape {shape}, not ({gates}*n_out, n_in)")
    return shape[1], shape[0] // gates


def infer_config(
    checkpoint: Mapping[str, Any], layout: CheckpointLayout, source: str = "checkpoint"
) -> LMConfig:
    """The model as the weights alone tell it; dropouts are the arch's defaults.

    The sizes and the number of layers come from the keys and shapes; ``tie_weights`` is whether
    ``1.decoder.weight`` is absent or equals the embedding, ``out_bias`` whether
    ``1.decoder.bias`` is there. A one-layer model's ``hidden_size`` is its ``emb_size`` (the
    weights have no other size to tell).

    Raises:
        InputError: inconsistent shapes, or QRNN windows other than fastai's.
    """
    state_dict, _, _ = _split(checkpoint)
    arch = LAYOUTS[layout.name]
    emb_shape = _shape(state_dict, _EMBEDDING)
    if len(emb_shape) != 2:
        raise InputError(f"{source}: {_EMBEDDING} has shape {emb_shape}, not (vocab, emb)")
    vocab_size, emb_size = emb_shape
    layers = _layer_indices(state_dict, source)
    n_layers = len(layers)
    io = [_layer_io(state_dict, arch, layer, source) for layer in layers]
    hidden_size = io[0][1] if n_layers > 1 else emb_size
    windows = []
    for layer, (n_in_window, n_out) in enumerate(io):
        n_in = emb_size if layer == 0 else hidden_size
        want_out = emb_size if layer == n_layers - 1 else hidden_size
        if n_out != want_out:
            raise InputError(
                f"{source}: recurrent layer {layer} has {n_out} outputs, expected {want_out} "
                f"(hidden size {hidden_size if n_layers > 1 else None}, the last layer the "
                f"embedding size {emb_size})"
            )
        if arch == "awd-lstm" and n_in_window != n_in:
            raise InputError(
                f"{source}: LSTM layer {layer} has {n_in_window} inputs, expected {n_in}"
            )
        if arch == "qrnn":
            if n_in_window % n_in or n_in_window // n_in not in (1, 2):
                raise InputError(
                    f"{source}: QRNN layer {layer} has {n_in_window} inputs, not 1 or 2 windows "
                    f"of {n_in}"
                )
            windows.append(n_in_window // n_in)
    if arch == "qrnn" and windows != qrnn_windows(n_layers):
        raise InputError(
            f"{source}: QRNN windows {windows} are not fastai's AWD-QRNN "
            f"{qrnn_windows(n_layers)}; this layout is not supported"
        )
    tie_weights = True
    if "1.decoder.weight" in state_dict:
        decoder, embedding = source_arrays(state_dict, ["1.decoder.weight", _EMBEDDING])
        tie_weights = decoder.shape == embedding.shape and bool((decoder == embedding).all())
    return LMConfig.create(
        arch, vocab_size, emb_size=emb_size, hidden_size=hidden_size, n_layers=n_layers
    ).replace(tie_weights=tie_weights, out_bias="1.decoder.bias" in state_dict)


def read_sidecar(pth_path: str | os.PathLike) -> LMConfig | None:
    """The ``X.json`` config next to ``X.pth``, or ``None`` when there is none."""
    path = sidecar_path(pth_path)
    if not path.is_file():
        return None
    return LMConfig.load(path)


def resolve_config(
    weights: LMConfig,
    sidecar: LMConfig | None,
    *,
    source: str = "checkpoint",
    sidecar_name: str = "sidecar",
) -> LMConfig:
    """Merge what the weights say (:func:`infer_config`) with the sidecar into one config.

    The weights decide the sizes; the sidecar decides the dropouts and must agree on the sizes.
    A decoder that equals the embedding is untied when the sidecar says so (converting it untied
    is exact). Without a sidecar, dropouts take the arch's defaults (they only matter for
    fine-tuning), which is logged.

    Raises:
        InputError: the sidecar contradicts the weights (both values are named).
    """
    if sidecar is None:
        logger.warning(
            "%s has no .json sidecar: sizes come from the weights, dropouts are the %s defaults",
            source,
            weights.arch,
        )
        return weights
    if weights.tie_weights and not sidecar.tie_weights:
        logger.info("%s: the decoder equals the embedding, but it is untied: kept untied", source)
        weights = weights.replace(tie_weights=False)
    names = ["arch", "vocab_size", "emb_size", "n_layers", "tie_weights", "out_bias"]
    if weights.n_layers > 1:  # a one-layer model's weights do not tell the hidden size
        names.append("hidden_size")
    disagree = [
        f"{name}: sidecar {getattr(sidecar, name)!r}, weights {getattr(weights, name)!r}"
        for name in names
        if getattr(sidecar, name) != getattr(weights, name)
    ]
    if disagree:
        raise InputError(f"{sidecar_name} does not describe {source}: " + "; ".join(disagree))
    if sidecar.bidir:
        raise InputError(f"{sidecar_name}: bidirectional encoders are not supported")
    if sidecar.special_ids != SPECIAL_IDS:
        raise InputError(
            f"{sidecar_name}: special ids {sidecar.special_ids} are not fastai's {SPECIAL_IDS}"
        )
    return sidecar


def read_lm_state(
    checkpoint: Mapping[str, Any],
    source: str = "checkpoint",
    sidecar: LMConfig | None = None,
    *,
    sidecar_name: str = "sidecar",
) -> LMState:
    """Read a fastai LM state dict: its layout, its model config, its checked tensors.

    Args:
        checkpoint: a state dict of tensors, or what ``ulmfit_torch.checkpoint_io.load_pth``
            returns (``{'model': state_dict, ...}``; the other entries are never read).
        source: the file, for messages.
        sidecar: the model's ``.json`` config (:func:`read_sidecar`), if there is one.
        sidecar_name: the sidecar, for messages.

    Raises:
        InputError: not a fastai AWD-LSTM/AWD-QRNN LM, inconsistent shapes, a sidecar that
            contradicts the weights, or keys that are missing, unknown or changed copies.
    """
    state_dict, _, _ = _split(checkpoint)
    layout = detect_layout(checkpoint, source)
    weights = infer_config(state_dict, layout, source)
    config = resolve_config(weights, sidecar, source=source, sidecar_name=sidecar_name)
    used = check_keys(state_dict, layout.name, config, source)
    ignored = tuple(sorted(set(state_dict) - set(used)))
    logger.info(
        "%s: %s (%s), vocab %d, emb %d, %d layers of %s, %s decoder%s",
        source,
        layout.name,
        layout.container,
        config.vocab_size,
        config.emb_size,
        config.n_layers,
        config.layer_sizes[0],
        "tied" if config.tie_weights else "untied",
        "" if config.out_bias else " without bias",
    )
    return LMState(config, layout, {key: state_dict[key] for key in used}, ignored, source)
