"""Random fastai text-classifier state dicts built with torch only, for tests and benchmarks.

fastai is not available in the TensorFlow environment, so the converter's tests make stage 08's
``.pth`` layout here: fastai 2.8's ``get_text_classifier``, i.e.
``SequentialRNN(SentenceEncoder(encoder), PoolingLinearClassifier)``. The encoder is a language
model's (:func:`convert.testing.fastai_lm_state_dict`, torch only) under ``0.module.`` without
the decoder; the head is one fastai ``LinBnDrop`` per linear layer under ``1.layers.{i}.``:
``BatchNorm1d`` at ``.0``, a ``Dropout`` at ``.1`` unless its rate is 0 (then fastai leaves it
out), and a bias-free ``Linear`` (a BatchNorm precedes it) after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from convert.testing import fastai_lm_state_dict

__all__ = ["fastai_classifier_state_dict"]


def fastai_classifier_state_dict(
    arch: str,
    vocab_size: int,
    emb_size: int,
    hidden_size: int,
    n_layers: int,
    n_classes: int,
    lin_ftrs: Sequence[int] = (50,),
    seed: int = 0,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
    dropout_in_head: bool | Sequence[bool] = True,
    init_range: float | None = 0.5,
) -> dict[str, torch.Tensor]:
    """A random classifier state dict with exactly fastai's ``get_text_classifier`` keys and
    shapes, in fastai's order.

    Args:
        arch: ``"awd-lstm"`` (fastai 2.8's encoder keys) or ``"qrnn"`` (fastai 2.2.7's).
        vocab_size, emb_size, hidden_size, n_layers: the encoder's sizes.
        n_classes: outputs of the last linear layer.
        lin_ftrs: the head's hidden widths (fastai's default ``[50]``).
        seed: random seed.
        bn_eps, bn_momentum: the BatchNorm settings the model is meant to have. They are not
            tensors, so the state dict does not hold them: record them in the sidecar's
            :class:`~ulmfit_core.classifier_config.ClassifierHead`.
        dropout_in_head: whether each linear layer has a ``Dropout`` before it (a rate above 0);
            one flag for every layer, or one per layer.
        init_range: the encoder's tensors (see :func:`convert.testing.fastai_lm_state_dict`).

    The BatchNorm tensors are random (positive ``running_var``, not 1; ``weight`` around 1) and
    ``num_batches_tracked`` is set, so that a converter that ignores the running statistics or
    the affine part fails a parity check.
    """
    if not bn_eps > 0 or not 0.0 <= bn_momentum <= 1.0:
        raise ValueError(f"bad BatchNorm settings eps={bn_eps}, momentum={bn_momentum}")
    lm = fastai_lm_state_dict(
        arch, vocab_size, emb_size, hidden_size, n_layers, init_range=init_range, seed=seed
    )
    state = {
        f"0.module.{key.removeprefix('0.')}": value
        for key, value in lm.items()
        if key.startswith("0.")
    }
    dims = [3 * emb_size, *lin_ftrs, n_classes]
    n_linear = len(dims) - 1
    flags = (
        [dropout_in_head] * n_linear
        if isinstance(dropout_in_head, bool)
        else [bool(flag) for flag in dropout_in_head]
    )
    if len(flags) != n_linear:
        raise ValueError(f"{len(flags)} dropout flags for {n_linear} linear layers")
    generator = torch.Generator().manual_seed(seed + 1)

    def uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    for index, (n_in, n_out, dropout) in enumerate(zip(dims[:-1], dims[1:], flags, strict=True)):
        prefix = f"1.layers.{index}."
        state[f"{prefix}0.weight"] = uniform((n_in,), 0.5, 1.5)
        state[f"{prefix}0.bias"] = uniform((n_in,), -0.2, 0.2)
        state[f"{prefix}0.running_mean"] = uniform((n_in,), -0.5, 0.5)
        state[f"{prefix}0.running_var"] = uniform((n_in,), 0.3, 2.0)
        state[f"{prefix}0.num_batches_tracked"] = torch.tensor(100 + index, dtype=torch.int64)
        bound = n_in**-0.5
        state[f"{prefix}{2 if dropout else 1}.weight"] = uniform((n_out, n_in), -bound, bound)
    return state
