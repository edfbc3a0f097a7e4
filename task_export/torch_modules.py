"""The torch modules of :mod:`task_export.torch_reference`: encoder, pooling and the two heads.

Plain torch (no Keras): what :class:`~task_export.torch_reference.TorchTaskModel` is made of and
what the stage-13 ONNX exporter traces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ulmfit_torch.qrnn import QRNNLayer

__all__ = ["ACTIVATIONS", "AttentionHead", "PooledHead", "TorchEncoder", "masked_concat_pool"]

# The attention head's hidden activations (Keras names).
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu}


def masked_concat_pool(
    x: Tensor, lengths: Tensor, mask: Tensor, window: tuple[int, int] | None = None
) -> Tensor:
    """``(batch, seq, d)`` -> ``(batch, 3d)``: ``[last valid, max, mean]`` over valid positions
    (post-padded rows; a row without a valid position pools to zeros), as Keras computes it.

    ``window``: ``(max_len, bptt)`` of a ``keep="last"`` classifier: max and mean cover only the
    positions from fastai's first kept chunk on (Keras' ``pool_start``)."""
    has_any = (lengths > 0).to(x.dtype)[:, None]
    rows = torch.arange(x.shape[0], device=x.device)
    last = x[rows, (lengths - 1).clamp(min=0)] * has_any
    pooled = lengths
    if window is not None:
        max_len, bptt = window
        start = torch.div(
            (lengths - max_len).clamp(min=0) + (bptt - 1), bptt, rounding_mode="floor"
        )
        start = start * bptt
        positions = torch.arange(x.shape[1], device=x.device)[None, :]
        mask = mask & (positions >= start[:, None])
        pooled = lengths - start
    lowest = torch.finfo(x.dtype).min
    max_pool = x.masked_fill(~mask[..., None], lowest).amax(dim=1) * has_any
    mean_pool = (x * mask[..., None]).sum(dim=1) / pooled.clamp(min=1).to(x.dtype)[:, None]
    return torch.cat([last, max_pool, mean_pool], dim=-1)


class TorchEncoder(nn.Module):
    """Embedding -> recurrent layers (``nn.LSTM`` or :class:`QRNNLayer`), zero at padding."""

    def __init__(
        self,
        arch: str,
        vocab_size: int,
        emb_size: int,
        layer_sizes: list[int],
        windows: list[int] | None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.embedding = nn.Embedding(vocab_size, emb_size)
        rnns: list[nn.Module] = []
        for i, n_out in enumerate(layer_sizes):
            n_in = emb_size if i == 0 else layer_sizes[i - 1]
            if arch == "awd-lstm":
                rnns.append(nn.LSTM(n_in, n_out, 1, batch_first=True))
            else:
                rnns.append(QRNNLayer(n_in, n_out, window=windows[i], batch_first=True))
        self.rnns = nn.ModuleList(rnns)

    def forward(self, ids: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        valid = mask[..., None].to(torch.float32)
        packed = bool((lengths < ids.shape[1]).any())  # no padding: nothing to pack
        x = self.embedding(ids)
        for rnn in self.rnns:
            if self.arch == "awd-lstm" and packed:
                # Each row runs at its own length; a row without tokens runs one (zeroed) step.
                sequence = pack_padded_sequence(
                    x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
                )
                x, _ = pad_packed_sequence(
                    rnn(sequence)[0], batch_first=True, total_length=ids.shape[1]
                )
            else:
                x, _ = rnn(x)  # causal QRNN (or no padding): padding never reaches a valid step
            x = x * valid
        return x


class PooledHead(nn.Module):
    """fastai's classifier head in eval: concat pool -> [BN] -> Linear+ReLU -> [BN] -> Linear."""

    def __init__(
        self,
        features: int,
        hidden_dim: int,
        n_out: int,
        batch_norm_eps: float | None,
        window: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.window = window
        widths = (3 * features, hidden_dim) if batch_norm_eps is not None else ()
        self.batch_norms = nn.ModuleList(nn.BatchNorm1d(w, eps=batch_norm_eps) for w in widths)
        self.dense = nn.Linear(3 * features, hidden_dim)
        self.predictions = nn.Linear(hidden_dim, n_out)

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> dict[str, Tensor]:
        h = masked_concat_pool(x, lengths, mask, self.window)
        if self.batch_norms:
            h = self.batch_norms[0](h)
        h = F.relu(self.dense(h))
        if self.batch_norms:
            h = self.batch_norms[1](h)
        return {"predictions": self.predictions(h)}


class AttentionHead(nn.Module):
    """The Branching Attention head: scores and features per position, softmax over the valid
    positions, the weighted sum of the features -> Linear."""

    def __init__(
        self,
        features: int,
        attention_units: list[int],
        aggregation_units: list[int],
        n_out: int,
        hidden_activation: str,
    ) -> None:
        super().__init__()
        if hidden_activation not in ACTIVATIONS:
            raise ValueError(f"activation {hidden_activation!r}: one of {sorted(ACTIVATIONS)}")
        self.hidden_activation = ACTIVATIONS[hidden_activation]
        self.attention = self._mlp(features, [*attention_units, 1])
        self.aggregation = self._mlp(features, aggregation_units)
        self.predictions = nn.Linear(aggregation_units[-1], n_out)

    @staticmethod
    def _mlp(features: int, widths: list[int]) -> nn.ModuleList:
        inputs = [features, *widths[:-1]]
        return nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip(inputs, widths, strict=True)
        )

    def _pointwise(self, layers: nn.ModuleList, x: Tensor) -> Tensor:
        for i, layer in enumerate(layers):
            x = layer(x)
            if i < len(layers) - 1:
                x = self.hidden_activation(x)
        return x

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> dict[str, Tensor]:
        del lengths  # the mask says it all
        scores = self._pointwise(self.attention, x)[..., 0]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * mask.to(scores.dtype)
        features = self._pointwise(self.aggregation, x)
        pooled = (weights[..., None] * features).sum(dim=1)
        return {"predictions": self.predictions(pooled), "token_weights": weights}
