"""Task models (masked concat pooling, classifier with BatchNorm and masks, regressor, branching
attention); the fine-tuning tricks over them are in test_keras_training.py."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import ulmfit_keras as uk  # noqa: E402
from tests.tf import tiny  # noqa: E402
from ulmfit_keras import (  # noqa: E402
    BranchingAttentionClassifier,
    LabelNormalizer,
    MaskedConcatPool,
    MaskedSoftmax,
    ULMFiTClassifier,
    ULMFiTRegressor,
)

PAD = 1
VOCAB = 60

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def tiny_encoder(seed: int = 0) -> uk.ULMFiTEncoder:
    return tiny.tiny_encoder(VOCAB, seed)


def padded_batch(lengths, seq_len: int, rng: np.random.Generator, low=2, high=VOCAB):
    ids = np.full((len(lengths), seq_len), PAD, dtype=np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(low, high, size=n)
    return ids


def two_class_data(n: int = 32, seq_len: int = 10, seed: int = 0):
    """Class 0 uses the low half of the vocabulary, class 1 the high half; post-padded."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    lengths = rng.integers(3, seq_len + 1, size=n)
    ids = np.full((n, seq_len), PAD, dtype=np.int32)
    for row, (label, length) in enumerate(zip(labels, lengths, strict=True)):
        low, high = (2, 31) if label == 0 else (31, VOCAB)
        ids[row, :length] = rng.integers(low, high, size=length)
    return ids, labels.astype(np.int32)


def numpy_concat_pool(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows = []
    for x, m in zip(h, mask, strict=True):
        n = int(m.sum())
        valid = x[:n]  # post-padding: the valid positions come first
        rows.append(np.concatenate([valid[n - 1], valid.max(axis=0), valid.mean(axis=0)]))
    return np.stack(rows)


def test_pooling_equals_numpy_on_padded_batch():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(4, 6, 5)).astype(np.float32) - 3.0  # negative: max must skip padding
    mask = np.zeros((4, 6), dtype=bool)
    for row, n in enumerate([6, 1, 3, 4]):
        mask[row, :n] = True
    pooled = MaskedConcatPool(name="pool")(h, mask=mask)
    np.testing.assert_allclose(np.asarray(pooled), numpy_concat_pool(h, mask), rtol=1e-6)
    no_mask = MaskedConcatPool(name="pool")(h)
    np.testing.assert_allclose(
        np.asarray(no_mask), numpy_concat_pool(h, np.ones_like(mask)), rtol=1e-6
    )


def test_pooling_of_encoder_output_ends_the_mask_and_ignores_padding():
    encoder = tiny_encoder()
    rng = np.random.default_rng(2)
    ids = padded_batch([7, 3, 5], 7, rng)
    h = encoder(ids)
    mask = ids != PAD
    pooled = MaskedConcatPool(name="pool")(h)  # the mask travels with the tensor
    assert getattr(pooled, "_keras_mask", None) is None
    np.testing.assert_allclose(
        np.asarray(pooled), numpy_concat_pool(np.asarray(h), mask), rtol=1e-5, atol=1e-6
    )
    # More padding on the right changes nothing.
    longer = np.concatenate([ids, np.full((3, 4), PAD, np.int32)], axis=1)
    np.testing.assert_allclose(
        np.asarray(MaskedConcatPool(name="pool")(encoder(longer))), np.asarray(pooled), atol=1e-5
    )


def test_empty_row_pools_to_zeros():
    h = np.ones((2, 3, 2), np.float32)
    mask = np.array([[True, False, False], [False, False, False]])
    pooled = np.asarray(MaskedConcatPool(name="pool")(h, mask=mask))
    assert np.all(np.isfinite(pooled))
    np.testing.assert_array_equal(pooled[1], 0.0)


def test_classifier_layers_and_config():
    model = ULMFiTClassifier(backbone=tiny_encoder(), num_classes=3, seed=0)
    names = [layer.name for layer in model.layers]
    for name in ("concat_pooling", "head_batch_norm_0", "head_dense", "head_batch_norm_1"):
        assert name in names
    assert model.output.shape == (None, 3)
    config = model.get_config()
    assert config["num_classes"] == 3 and config["use_batch_norm"] is True
    no_bn = ULMFiTClassifier(backbone=tiny_encoder(), num_classes=2, use_batch_norm=False)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in no_bn.layers)
    with pytest.raises(ValueError, match="dropout"):
        ULMFiTClassifier(backbone=tiny_encoder(), num_classes=2, dropout=(0.5,))


def test_batch_norm_gets_no_mask_and_no_padding_in_its_statistics(monkeypatch):
    # The predecessor's failure: a (batch, seq) mask reaching BatchNorm over (batch, features).
    h = np.ones((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="mask"):
        keras.layers.BatchNormalization(name="bn")(
            h.mean(axis=1), mask=np.ones((2, 3), bool), training=True
        )

    model = ULMFiTClassifier(backbone=tiny_encoder(), num_classes=2, seed=0)
    seen = []
    original = keras.layers.BatchNormalization.call

    def spy(self, inputs, training=None, mask=None):
        seen.append((self.name, mask, training))
        return original(self, inputs, training=training, mask=mask)

    monkeypatch.setattr(keras.layers.BatchNormalization, "call", spy)
    ids = padded_batch([6, 2, 4, 5], 6, np.random.default_rng(5))
    model(ids, training=True)
    assert [(name, mask) for name, mask, _ in seen] == [
        ("head_batch_norm_0", None),
        ("head_batch_norm_1", None),
    ]
    assert all(training for _, _, training in seen)
    monkeypatch.undo()

    # One training step of the first BatchNorm on pooled encoder outputs: its moving mean moves
    # by 0.1 (PyTorch's momentum) towards the batch mean of the unpadded pooled features.
    bn = model.get_layer("head_batch_norm_0")
    before = np.array(bn.moving_mean.numpy())
    h = np.asarray(model.backbone(ids))
    pooled = MaskedConcatPool(name="pool")(model.backbone(ids))
    bn(pooled, training=True)
    want = 0.9 * before + 0.1 * numpy_concat_pool(h, ids != PAD).mean(axis=0)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), want, rtol=1e-4, atol=1e-6)


def test_classifier_with_batch_norm_overfits_32_examples_and_round_trips(tmp_path):
    ids, labels = two_class_data()
    model = ULMFiTClassifier(backbone=tiny_encoder(), num_classes=2, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(ids, labels, batch_size=8, epochs=12, shuffle=True, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    # Inference mode: BatchNorm's moving statistics, no dropout.
    probs = model.predict(ids, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    assert accuracy >= 0.95, accuracy
    bn = model.get_layer("head_batch_norm_0")
    assert not np.allclose(np.asarray(bn.moving_mean), 0.0)  # BatchNorm did train

    path = tmp_path / "classifier.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, ULMFiTClassifier)
    np.testing.assert_allclose(reloaded.predict(ids, verbose=0), probs, rtol=1e-5, atol=1e-6)


def test_regressor_trains_and_normalizer_inverts(tmp_path):
    rng = np.random.default_rng(3)
    ids = padded_batch(rng.integers(3, 9, size=32), 8, rng)
    # Target: the share of high-half tokens, on a scale far from 0/1.
    valid = ids != PAD
    target = 50.0 + 20.0 * ((ids >= 31) & valid).sum(axis=1) / valid.sum(axis=1)
    normalizer = LabelNormalizer.fit(target)
    scaled = normalizer.transform(target)
    np.testing.assert_allclose(scaled.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalizer.inverse_transform(scaled), target, rtol=1e-5)
    assert LabelNormalizer.from_json(normalizer.to_json()) == normalizer
    assert LabelNormalizer.fit([2.0, 2.0]).std == 1.0

    model = ULMFiTRegressor(backbone=tiny_encoder(), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = model.fit(ids, scaled, batch_size=8, epochs=6, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    preds = normalizer.inverse_transform(model.predict(ids, verbose=0)[:, 0])
    assert preds.shape == (32,)

    path = tmp_path / "regressor.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(ids, verbose=0), model.predict(ids, verbose=0), rtol=1e-5, atol=1e-6
    )


# --- branching attention -----------------------------------------------------------------------


def test_masked_softmax_hand_written():
    scores = np.array([[[1.0], [2.0], [3.0]], [[5.0], [0.0], [9.0]]], np.float32)
    mask = np.array([[True, True, False], [False, False, False]])
    weights = np.asarray(MaskedSoftmax(name="w")(scores, mask=mask))
    e = np.exp([1.0, 2.0])
    np.testing.assert_allclose(weights[0], [e[0] / e.sum(), e[1] / e.sum(), 0.0], rtol=1e-6)
    np.testing.assert_array_equal(weights[1], 0.0)  # no valid position: zeros, not NaN


def test_branching_attention_weights_train_and_round_trip(tmp_path):
    ids, labels = two_class_data(n=16, seq_len=9, seed=4)
    model = BranchingAttentionClassifier(backbone=tiny_encoder(), num_classes=2, seed=0)
    assert {"attention_dense_0", "attention_dense_1", "aggregation_dense_1"} <= {
        layer.name for layer in model.layers
    }
    assert model.get_layer("aggregation_dense_1").units == 10

    def check_weights(weights: np.ndarray) -> None:
        valid = ids != PAD
        assert weights.shape == ids.shape
        assert np.all(weights >= 0.0)
        np.testing.assert_array_equal(weights[~valid], 0.0)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)

    check_weights(np.asarray(model(ids)["attention_weights"]))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={"predictions": "sparse_categorical_crossentropy"},
    )
    history = model.fit(ids, {"predictions": labels}, batch_size=8, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    out = model.predict(ids, verbose=0)
    check_weights(out["attention_weights"])
    assert out["predictions"].shape == (16, 2)

    path = tmp_path / "attention.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, BranchingAttentionClassifier)
    again = reloaded.predict(ids, verbose=0)
    for key in ("predictions", "attention_weights"):
        np.testing.assert_allclose(again[key], out[key], rtol=1e-5, atol=1e-6)
