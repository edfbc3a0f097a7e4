"""The fine-tuning tricks over a task model: layer groups, discriminative learning rates,
gradual unfreezing."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import ulmfit_keras as uk  # noqa: E402
from tests.tf import tiny  # noqa: E402
from tests.tf.test_keras_heads import VOCAB, tiny_encoder, two_class_data  # noqa: E402
from ulmfit_keras import (  # noqa: E402
    DiscriminativeAdam,
    DiscriminativeSGD,
    GradualUnfreezing,
    ULMFiTClassifier,
    discriminative_multipliers,
    layer_groups,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def classifier() -> ULMFiTClassifier:
    return ULMFiTClassifier(backbone=tiny_encoder(), num_classes=2, seed=0)


def test_layer_groups_follow_fastai_split():
    model = classifier()
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["embedding", "lstm_0", "lstm_1", "head"]
    head_names = {layer.name for layer in groups[-1].layers}
    assert head_names == {
        "head_batch_norm_0",
        "head_dense",
        "head_batch_norm_1",
        "predictions",
    }
    # Every model weight is in exactly one group.
    paths = [v.path for g in groups for v in g.variables]
    assert sorted(paths) == sorted(v.path for v in model.weights)


def test_layer_groups_of_a_qrnn_classifier():
    encoder, _ = uk.build_encoder(
        {
            "arch": "qrnn",
            "vocab_size": VOCAB,
            "emb_size": 8,
            "hidden_size": 12,
            "n_layers": 3,
            "windows": [2, 1, 1],
        },
        seed=0,
    )
    model = ULMFiTClassifier(backbone=encoder, num_classes=2)
    assert [g.name for g in layer_groups(model)] == [
        "embedding",
        "qrnn_0",
        "qrnn_1",
        "qrnn_2",
        "head",
    ]


def test_discriminative_multipliers_per_group():
    model = classifier()
    groups = layer_groups(model)
    multipliers = discriminative_multipliers(groups)
    expected = {"embedding": 2.6**-3, "lstm_0": 2.6**-2, "lstm_1": 2.6**-1, "head": 1.0}
    for group in groups:
        for variable in group.variables:
            assert multipliers[variable.path] == pytest.approx(expected[group.name])


def test_discriminative_sgd_steps_each_group_at_its_rate():
    model = classifier()
    groups = layer_groups(model)
    lr = 0.1
    optimizer = DiscriminativeSGD(
        learning_rate=lr, lr_multipliers=discriminative_multipliers(groups)
    )
    variables = model.trainable_variables
    before = [np.array(v.numpy()) for v in variables]
    optimizer.apply_gradients([(np.ones(v.shape, np.float32), v) for v in variables])
    depth = {g.name: len(groups) - 1 - i for i, g in enumerate(groups)}
    group_of = {v.path: g.name for g in groups for v in g.variables}
    for variable, old in zip(variables, before, strict=True):
        step = old - np.asarray(variable.numpy())
        expected = lr / 2.6 ** depth[group_of[variable.path]]
        np.testing.assert_allclose(step, expected, rtol=1e-5)
    restored = DiscriminativeSGD.from_config(optimizer.get_config())
    assert restored.lr_multipliers == optimizer.lr_multipliers


def test_gradual_unfreezing_trains_one_more_group_each_epoch():
    ids, labels = two_class_data(n=16, seq_len=8)
    model = classifier()
    groups = layer_groups(model)
    model.compile(
        optimizer=DiscriminativeAdam(
            learning_rate=1e-2, lr_multipliers=discriminative_multipliers(groups)
        ),
        loss="sparse_categorical_crossentropy",
    )

    recorder = tiny.ChangedGroups(groups)
    unfreezing = GradualUnfreezing(groups)
    history = model.fit(
        ids, labels, batch_size=8, epochs=5, verbose=0, callbacks=[unfreezing, recorder]
    )
    assert recorder.per_epoch == [
        ["head"],
        ["lstm_1", "head"],
        ["lstm_0", "lstm_1", "head"],
        ["embedding", "lstm_0", "lstm_1", "head"],
        ["embedding", "lstm_0", "lstm_1", "head"],
    ]
    assert np.all(np.isfinite(history.history["loss"]))
    assert len(model.trainable_variables) == len(model.weights) - 4  # BatchNorm moving stats
