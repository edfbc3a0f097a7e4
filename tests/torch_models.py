"""Torch-model helpers shared by both environments' tests (torch only, never fastai)."""

from __future__ import annotations

__all__ = ["awd_qrnn_lm_state_dict_shapes"]


def awd_qrnn_lm_state_dict_shapes(
    vocab_sz: int,
    emb_sz: int,
    n_hid: int,
    n_layers: int,
    bidir: bool = False,
    out_bias: bool = True,
) -> dict[str, tuple[int, ...]]:
    """Keys and shapes, in order, of a fastai 2.2.7 AWD-QRNN language model's state dict.

    The model is ``SequentialRNN(AWD_QRNN, LinearDecoder)``; ``1.decoder.weight`` is listed even
    when tied to the embedding, because ``state_dict`` lists it under both names.
    """
    n_dir = 2 if bidir else 1
    shapes: dict[str, tuple[int, ...]] = {
        "0.encoder.weight": (vocab_sz, emb_sz),
        "0.encoder_dp.emb.weight": (vocab_sz, emb_sz),
    }
    for layer in range(n_layers):
        n_in = emb_sz if layer == 0 else n_hid
        n_out = (n_hid if layer != n_layers - 1 else emb_sz) // n_dir
        window = 2 if layer == 0 else 1
        gates, inputs = 3 * n_out, window * n_in
        prefix = f"0.rnns.{layer}.layers"
        shapes[f"{prefix}.0.linear.weight_raw"] = (gates, inputs)
        shapes[f"{prefix}.0.linear.module.bias"] = (gates,)
        if bidir:
            shapes[f"{prefix}_bwd.0.linear.weight"] = (gates, inputs)
            shapes[f"{prefix}_bwd.0.linear.bias"] = (gates,)
    shapes["1.decoder.weight"] = (vocab_sz, emb_sz)
    if out_bias:
        shapes["1.decoder.bias"] = (vocab_sz,)
    return shapes
