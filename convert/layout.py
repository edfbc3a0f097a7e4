"""Convert the config: the architecture and sizes of a fastai LM, read from its state dict.

The architecture comes from the artifact, not from flags (keras-hub's converters). Keys tell
the layout (AWD-LSTM or AWD-QRNN, fastai 2.8 or 2.2.7) and the number of layers; shapes tell
the sizes, the QRNN windows and whether the decoder is tied. The ``.json`` sidecar written
next to the ``.pth`` by stage 04 adds what the weights cannot tell (dropouts, the SPM model's
hash); where both speak, they must agree. CLI flags are assertions about the file: one that
contradicts it is an error naming both.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convert.mapping import (
    FASTAI_28_AWD_LSTM,
    FASTAI_227_AWD_LSTM,
    FASTAI_227_AWD_QRNN,
    source_arrays,
)
from ulmfit_core.errors import InputError
from ulmfit_core.ids import SPECIAL_IDS
from ulmfit_core.lm_config import LMConfig, qrnn_windows, sidecar_path

logger = logging.getLogger(__name__)

__all__ = ["CheckpointLayout", "convert_config", "detect_layout", "read_sidecar", "resolve_config"]

_LAYER_KEY = re.compile(r"^0\.rnns\.(\d+)\.")
_LSTM_MARK = "weight_hh_l0_raw"  # only AWD-LSTM layers have it
_QRNN_MARK = "layers.0.linear.weight_raw"  # only AWD-QRNN layers have it
_LSTM_DROPPED_COPY = "module.weight_hh_l0"  # written by fastai 2.2.7-era WeightDropout
_EMBEDDING = "0.encoder.weight"


@dataclass(frozen=True)
class CheckpointLayout:
    """What a state dict says about its model.

    ``hidden_size`` is ``None`` for a one-layer model (only ``emb_size`` is used then).
    ``windows`` is ``None`` for AWD-LSTM.
    """

    name: str
    arch: str
    vocab_size: int
    emb_size: int
    hidden_size: int | None
    n_layers: int
    windows: tuple[int, ...] | None
    tie_weights: bool
    out_bias: bool


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


def _arch(state_dict: Mapping[str, Any], source: str) -> tuple[str, str]:
    lstm = any(key.endswith(_LSTM_MARK) for key in state_dict)
    qrnn = any(key.endswith(_QRNN_MARK) for key in state_dict)
    if lstm == qrnn:
        what = "both AWD-LSTM and AWD-QRNN" if lstm else "neither AWD-LSTM nor AWD-QRNN"
        raise InputError(
            f"{source}: not a fastai AWD-LSTM/AWD-QRNN language model: its keys have {what} "
            f"layers (looked for *.{_LSTM_MARK} and *.{_QRNN_MARK})"
        )
    if qrnn:
        return "qrnn", FASTAI_227_AWD_QRNN
    if any(key.endswith(_LSTM_DROPPED_COPY) for key in state_dict):
        return "awd-lstm", FASTAI_227_AWD_LSTM
    return "awd-lstm", FASTAI_28_AWD_LSTM


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


def detect_layout(state_dict: Mapping[str, Any], source: str = "checkpoint") -> CheckpointLayout:
    """Read the layout and sizes from a fastai LM state dict's keys and shapes.

    Raises:
        InputError: not a fastai AWD-LSTM/AWD-QRNN language model, or inconsistent shapes.
    """
    if _EMBEDDING not in state_dict:
        raise InputError(
            f"{source}: no {_EMBEDDING}: not a fastai language model state dict "
            f"(keys start with {sorted(state_dict)[:3]})"
        )
    arch, name = _arch(state_dict, source)
    emb_shape = _shape(state_dict, _EMBEDDING)
    if len(emb_shape) != 2:
        raise InputError(f"{source}: {_EMBEDDING} has shape {emb_shape}, not (vocab, emb)")
    vocab_size, emb_size = emb_shape
    layers = _layer_indices(state_dict, source)
    n_layers = len(layers)
    io = [_layer_io(state_dict, arch, layer, source) for layer in layers]
    hidden_size = io[0][1] if n_layers > 1 else None
    windows = None
    for layer, (n_in_window, n_out) in enumerate(io):
        n_in = emb_size if layer == 0 else hidden_size
        want_out = emb_size if layer == n_layers - 1 else hidden_size
        if n_out != want_out:
            raise InputError(
                f"{source}: recurrent layer {layer} has {n_out} outputs, expected {want_out} "
                f"(hidden size {hidden_size}, the last layer the embedding size {emb_size})"
            )
        if arch == "awd-lstm" and n_in_window != n_in:
            raise InputError(
                f"{source}: LSTM layer {layer} has {n_in_window} inputs, expected {n_in}"
            )
    if arch == "qrnn":
        windows = []
        for layer, (n_in_window, _) in enumerate(io):
            n_in = emb_size if layer == 0 else hidden_size
            if n_in_window % n_in or n_in_window // n_in not in (1, 2):
                raise InputError(
                    f"{source}: QRNN layer {layer} has {n_in_window} inputs, not 1 or 2 windows "
                    f"of {n_in}"
                )
            windows.append(n_in_window // n_in)
        windows = tuple(windows)
    tie_weights = True
    if "1.decoder.weight" in state_dict:
        (decoder,) = source_arrays(state_dict, ["1.decoder.weight"])
        (embedding,) = source_arrays(state_dict, [_EMBEDDING])
        tie_weights = decoder.shape == embedding.shape and bool((decoder == embedding).all())
    layout = CheckpointLayout(
        name=name,
        arch=arch,
        vocab_size=vocab_size,
        emb_size=emb_size,
        hidden_size=hidden_size,
        n_layers=n_layers,
        windows=windows,
        tie_weights=tie_weights,
        out_bias="1.decoder.bias" in state_dict,
    )
    logger.info(
        "%s: %s, vocab %d, emb %d, %d layers of %s, %s decoder%s",
        source,
        name,
        vocab_size,
        emb_size,
        n_layers,
        hidden_size or emb_size,
        "tied" if tie_weights else "untied",
        "" if layout.out_bias else " without bias",
    )
    return layout


def read_sidecar(pth_path: str | os.PathLike) -> LMConfig | None:
    """The ``X.json`` config next to ``X.pth``, or ``None`` when there is none."""
    path = sidecar_path(pth_path)
    if not path.is_file():
        return None
    return LMConfig.load(path)


def resolve_config(
    layout: CheckpointLayout,
    sidecar: LMConfig | None,
    *,
    qrnn: bool | None = None,
    num_recurrent_layers: int | None = None,
    source: str = "checkpoint",
    sidecar_name: str = "sidecar",
) -> LMConfig:
    """Merge what the weights say with the sidecar and the flags into one :class:`LMConfig`.

    The weights decide the sizes; the sidecar decides the dropouts and must agree on the sizes;
    a flag must agree with the file. Without a sidecar, dropouts take the arch's defaults (they
    only matter for fine-tuning), which is logged.

    Raises:
        InputError: a flag or the sidecar contradicts the weights (both values are named).
    """
    if qrnn is not None and qrnn != (layout.arch == "qrnn"):
        flag = "--qrnn" if qrnn else "--awd-lstm"
        raise InputError(
            f"{flag} was given, but {source} holds an {layout.arch} model ({layout.name} keys); "
            "drop the flag: the architecture is read from the file"
        )
    if num_recurrent_layers is not None and num_recurrent_layers != layout.n_layers:
        raise InputError(
            f"--num-recurrent-layers {num_recurrent_layers} was given, but {source} has "
            f"{layout.n_layers} recurrent layers; drop the flag: it is read from the file"
        )
    if layout.windows is not None and list(layout.windows) != qrnn_windows(layout.n_layers):
        raise InputError(
            f"{source}: QRNN windows {list(layout.windows)} are not fastai's AWD-QRNN "
            f"{qrnn_windows(layout.n_layers)}; this layout is not supported"
        )
    if sidecar is None:
        logger.warning(
            "%s has no .json sidecar: sizes come from the weights, dropouts are the %s defaults",
            source,
            layout.arch,
        )
        return LMConfig.create(
            layout.arch,
            layout.vocab_size,
            emb_size=layout.emb_size,
            hidden_size=layout.hidden_size or layout.emb_size,
            n_layers=layout.n_layers,
        ).replace(tie_weights=layout.tie_weights, out_bias=layout.out_bias)
    from_weights = {
        "arch": layout.arch,
        "vocab_size": layout.vocab_size,
        "emb_size": layout.emb_size,
        "n_layers": layout.n_layers,
        "tie_weights": layout.tie_weights,
        "out_bias": layout.out_bias,
    }
    if layout.hidden_size is not None:
        from_weights["hidden_size"] = layout.hidden_size
    disagree = [
        f"{name}: sidecar {getattr(sidecar, name)!r}, weights {value!r}"
        for name, value in from_weights.items()
        if getattr(sidecar, name) != value
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


def convert_config(
    state_dict: Mapping[str, Any],
    pth_path: str | os.PathLike,
    *,
    qrnn: bool | None = None,
    num_recurrent_layers: int | None = None,
) -> tuple[CheckpointLayout, LMConfig]:
    """The layout and the model config of the ``.pth`` at ``pth_path`` (sidecar merged in)."""
    source = str(pth_path)
    layout = detect_layout(state_dict, source)
    sidecar = read_sidecar(pth_path)
    if sidecar is not None and layout.tie_weights and not sidecar.tie_weights:
        # An untied decoder that happens to equal the embedding: converting it untied is exact.
        logger.info("%s: the decoder equals the embedding, but it is untied: kept untied", source)
        layout = dataclasses.replace(layout, tie_weights=False)
    config = resolve_config(
        layout,
        sidecar,
        qrnn=qrnn,
        num_recurrent_layers=num_recurrent_layers,
        source=source,
        sidecar_name=str(sidecar_path(Path(pth_path))),
    )
    return layout, config
