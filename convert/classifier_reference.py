"""fastai's text classifier in eval mode, in torch without fastai: the parity reference.

What ``get_text_classifier`` computes for one text (``SequentialRNN(SentenceEncoder,
PoolingLinearClassifier)``, fastai 2.8 ``text/models/core.py``), step by step:

1. ``SentenceEncoder``: ``reset()``, then the encoder reads the text ``bptt`` tokens at a time,
   its hidden states (and the QRNN's saved previous input) carried from chunk to chunk; the
   outputs of the chunks starting at ``i`` with ``length - i <= max_len`` are kept;
2. ``masked_concat_pool``: ``[last, max, mean]`` over the kept outputs (one text: no padding);
3. one ``LinBnDrop`` per layer: ``BatchNorm1d`` with its running statistics, (dropout: the
   identity), a bias-free ``Linear``, ReLU except after the last;
4. softmax (fastai returns logits; the Keras classifier returns probabilities).

The encoder is :class:`convert.reference.ReferenceLM`'s (the LM reference), loaded from the same
checked tensors. Parity is defined per text: fastai's batches are padded first, in whole chunks,
so that every text's computation is its own.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from convert.reference import ReferenceLM, build_reference
from ulmfit_torch.classifier_state import ClassifierState

__all__ = ["ReferenceClassifier"]


class ReferenceClassifier:
    """fastai's classifier forward for one text at a time (module docstring)."""

    def __init__(self, state: ClassifierState) -> None:
        self.lm: ReferenceLM = build_reference(state.encoder)
        self.head = state.head
        self.blocks = [
            (
                {part: torch.from_numpy(array) for part, array in block.batch_norm.items()},
                torch.from_numpy(block.linear),
            )
            for block in state.blocks
        ]

    @torch.no_grad()
    def encode(self, ids: np.ndarray) -> torch.Tensor:
        """``SentenceEncoder``: the kept outputs ``(kept, emb)`` of one unpadded text."""
        ids_t = torch.from_numpy(np.asarray(ids, dtype=np.int64))[None, :]
        body, bptt, max_len = self.lm.body, self.head.bptt, self.head.max_len
        self.lm.reset()
        hidden: list = [None] * len(body.rnns)
        length = ids_t.shape[1]
        kept = []
        for start in range(0, length, bptt):
            x = body.encoder(ids_t[:, start : start + bptt])
            for layer, rnn in enumerate(body.rnns):
                x, hidden[layer] = rnn(x, hidden[layer])
            if length - start <= max_len:
                kept.append(x)
        self.lm.reset()
        return torch.cat(kept, dim=1)[0]

    @torch.no_grad()
    def pooled(self, ids: np.ndarray) -> torch.Tensor:
        """``masked_concat_pool`` of one text: ``[last, max, mean]``, ``(3 * emb,)``."""
        out = self.encode(ids)
        return torch.cat([out[-1], out.max(dim=0).values, out.mean(dim=0)])

    @torch.no_grad()
    def _head(self, pooled: torch.Tensor) -> torch.Tensor:
        """The ``LinBnDrop`` blocks: pooled features ``(3 * emb,)`` -> logits."""
        x = pooled[None, :]
        for index, (bn, weight) in enumerate(self.blocks):
            x = F.batch_norm(
                x,
                bn["running_mean"],
                bn["running_var"],
                bn["weight"],
                bn["bias"],
                training=False,
                eps=self.head.bn_eps,
            )
            x = F.linear(x, weight)
            if index < len(self.blocks) - 1:
                x = F.relu(x)
        return x[0]

    def outputs(self, texts: list[np.ndarray]) -> dict[str, np.ndarray]:
        """``pooled`` features and softmax ``probabilities``, one row per text (each run alone,
        unpadded)."""
        pooled = [self.pooled(ids) for ids in texts]
        probs = [torch.softmax(self._head(x), dim=-1) for x in pooled]
        return {
            "pooled": torch.stack(pooled).numpy(),
            "probabilities": torch.stack(probs).numpy(),
        }
