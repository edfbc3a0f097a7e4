"""The converter's torch reference of a fastai classifier computes what fastai 2.8 computes.

Stage 05 proves Keras against :class:`convert.classifier_reference.ReferenceClassifier` (the TF
environment has no fastai); here, where fastai is, the reference is proved against fastai's own
``SequentialRNN(SentenceEncoder, PoolingLinearClassifier)`` in eval mode: texts within one
chunk, over several chunks and beyond ``max_len``, one by one and in fastai's pad-first batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastai.text.data import pad_input_chunk
from fastai.text.models.awdlstm import AWD_LSTM
from fastai.text.models.core import PoolingLinearClassifier, SentenceEncoder, SequentialRNN

from convert.classifier_reference import ReferenceClassifier
from lm_training.models import AWD_QRNN
from ulmfit_core.classifier_config import ClassifierHead
from ulmfit_core.lm_config import LMConfig
from ulmfit_torch.classifier_state import read_classifier_state

VOCAB, EMB, HIDDEN = 50, 12, 20
BPTT, MAX_LEN = 6, 18
EPS, MOMENTUM = 1e-3, 0.2


def fastai_classifier(arch: str, n_layers: int) -> SequentialRNN:
    """fastai's classifier (as ``get_text_classifier`` builds it), random head statistics."""
    torch.manual_seed(0)
    encoder_cls = AWD_QRNN if arch == "qrnn" else AWD_LSTM
    encoder = encoder_cls(VOCAB, EMB, HIDDEN, n_layers, pad_token=1)
    head = PoolingLinearClassifier([3 * EMB, 8, 3], [0.2, 0.1], bptt=BPTT)
    model = SequentialRNN(SentenceEncoder(BPTT, encoder, pad_idx=1, max_len=MAX_LEN), head)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in head.layers:
            bn = block[0]
            bn.eps, bn.momentum = EPS, MOMENTUM
            bn.weight.uniform_(0.5, 1.5, generator=generator)
            bn.bias.uniform_(-0.5, 0.5, generator=generator)
            bn.running_mean.uniform_(-0.3, 0.3, generator=generator)
            bn.running_var.uniform_(0.01, 0.1, generator=generator)
        for param in encoder.parameters():
            param.uniform_(-0.4, 0.4, generator=generator)
    return model.eval()


def reference_of(model: SequentialRNN, arch: str, n_layers: int) -> ReferenceClassifier:
    config = LMConfig.create(arch, VOCAB, emb_size=EMB, hidden_size=HIDDEN, n_layers=n_layers)
    head = ClassifierHead(
        labels=["a", "b", "c"],
        head_sizes=[3 * EMB, 8, 3],
        head_dropouts=[0.2, 0.1],
        bptt=BPTT,
        max_len=MAX_LEN,
        bn_eps=EPS,
        bn_momentum=MOMENTUM,
    )
    state = read_classifier_state(model.state_dict(), head, "fastai model", config)
    return ReferenceClassifier(state)


def texts(seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    lengths = (3, BPTT, BPTT + 1, 2 * BPTT + 3, MAX_LEN, MAX_LEN + 1, 3 * MAX_LEN + 4)
    return [torch.from_numpy(rng.integers(4, VOCAB, size=n)) for n in lengths]


@pytest.mark.parametrize(("arch", "n_layers"), [("awd-lstm", 2), ("qrnn", 3)])
def test_reference_equals_fastai_text_by_text(arch, n_layers):
    model = fastai_classifier(arch, n_layers)
    reference = reference_of(model, arch, n_layers)
    rows = texts(seed=0)
    with torch.no_grad():
        fastai_probs = np.stack(
            [torch.softmax(model(row[None, :])[0], dim=-1)[0].numpy() for row in rows]
        )
    ours = reference.outputs([row.numpy() for row in rows])["probabilities"]
    assert fastai_probs.min() > 0.02 and fastai_probs.max() < 0.98  # a wrong pooling would show
    np.testing.assert_allclose(ours, fastai_probs, atol=1e-6)


@pytest.mark.parametrize(("arch", "n_layers"), [("awd-lstm", 2), ("qrnn", 3)])
def test_fastai_pad_first_batches_compute_each_text_alone(arch, n_layers):
    """Why parity is defined per text: fastai's batches (sorted, padded first in whole chunks)
    give every text its own result, while no text passes max_len (beyond it, the kept chunks
    depend on how long the batch is)."""
    model = fastai_classifier(arch, n_layers)
    reference = reference_of(model, arch, n_layers)
    rows = sorted([r for r in texts(seed=1) if len(r) <= MAX_LEN], key=len, reverse=True)
    batch = pad_input_chunk([(row, 0) for row in rows], pad_idx=1, pad_first=True, seq_len=BPTT)
    ids = torch.stack([x for x, _ in batch])
    with torch.no_grad():
        fastai_probs = torch.softmax(model(ids)[0], dim=-1).numpy()
    ours = reference.outputs([row.numpy() for row in rows])["probabilities"]
    np.testing.assert_allclose(ours, fastai_probs, atol=1e-6)
