"""Length-bucketed batches (ulmfit_tasks.batching): order, padding, fine_tune on them."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import ulmfit_keras as uk  # noqa: E402
from tests.tf import tiny  # noqa: E402
from ulmfit_keras import MaskedSparseCategoricalCrossentropy  # noqa: E402
from ulmfit_keras.word_alignment import IGNORE_LABEL  # noqa: E402
from ulmfit_tasks import batching  # noqa: E402
from ulmfit_tasks.batching import (  # noqa: E402
    BucketedBatches,
    bucket_batch_indices,
    predict_sorted,
    sequence_lengths,
)
from ulmfit_tasks.config import TrainingConfig  # noqa: E402
from ulmfit_tasks.fine_tuning import TaskSetup, fine_tune  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

VOCAB, PAD, BOS, EOS = 60, 1, 2, 3


def padded_ids(n: int, width: int, seed: int = 0) -> np.ndarray:
    """``<s> tokens </s>`` rows of random lengths 2..width, post-padded to ``width``."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, width), PAD, dtype=np.int32)
    for row, length in enumerate(rng.integers(2, width + 1, n)):
        ids[row, :length] = [BOS, *rng.integers(4, VOCAB, length - 2), EOS]
    ids[-1, :width] = [BOS, *rng.integers(4, VOCAB, width - 2), EOS]  # one row fills the width
    return ids


def tagger_labels(ids: np.ndarray) -> np.ndarray:
    """A learnable per-token task: the parity of each token id; specials and padding ignored."""
    return np.where(ids > EOS, ids % 2, IGNORE_LABEL).astype(np.int32)


# --- the order ---------------------------------------------------------------------------------


def test_lengths_count_a_pad_id_inside_a_row_as_a_token():
    ids = np.array([[2, 5, 1, 7, 3, 1, 1], [2, 3, 1, 1, 1, 1, 1], [1] * 7, [2, 4, 4, 4, 4, 4, 3]])
    assert sequence_lengths(ids).tolist() == [5, 2, 0, 7]


def test_every_example_once_in_ceil_n_over_bs_batches_each_cut_to_its_longest_row():
    ids = padded_ids(203, 30)
    targets = {"predictions": np.arange(203, dtype=np.int32)}
    batches = BucketedBatches(ids, targets, batch_size=16, seed=3, megabatch=4)
    lengths = sequence_lengths(ids)
    assert len(batches) == 13
    for epoch in range(3):
        rows = batches.batch_indices(epoch)
        assert len(rows) == 13
        assert sorted(np.concatenate(rows).tolist()) == list(range(203))
        assert max(lengths[rows[0]]) == lengths.max()  # the longest batch first
        for picked, (x, y) in zip(rows, batches.epoch(epoch), strict=True):
            assert x.shape == (len(picked), lengths[picked].max())
            np.testing.assert_array_equal(x, ids[picked, : x.shape[1]])
            np.testing.assert_array_equal(y["predictions"], picked)
            # Longest first within a batch: it is a run of a sorted megabatch.
            assert np.all(np.diff(lengths[picked]) <= 0)


def test_batches_are_runs_of_length_sorted_megabatches():
    lengths = np.random.default_rng(0).integers(1, 100, 500)
    # One megabatch holding everything: the batches cut one sorted list.
    rows = bucket_batch_indices(lengths, 20, seed=1, epoch=0, megabatch=25)
    runs = sorted(rows, key=lambda picked: -lengths[picked[0]])
    joined = lengths[np.concatenate(runs)]
    assert np.all(np.diff(joined) <= 0)
    # Megabatches of 5 batches: sorted within each, so far less spread per batch than at random.
    rows = bucket_batch_indices(lengths, 20, seed=1, epoch=0, megabatch=5)
    spread = np.mean([np.ptp(lengths[picked]) for picked in rows])
    assert spread < 0.5 * np.ptp(lengths)


def test_order_is_reproducible_for_a_seed_and_differs_across_epochs_and_seeds():
    lengths = np.random.default_rng(0).integers(1, 50, 300)

    def order(seed, epoch):
        return np.concatenate(bucket_batch_indices(lengths, 16, seed, epoch)).tolist()

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)


def test_per_token_targets_are_cut_like_the_ids_and_must_match_their_shape():
    ids = padded_ids(40, 12)
    labels = tagger_labels(ids)
    batches = BucketedBatches(ids, labels, batch_size=8, per_token_targets=True)
    for rows, (x, y) in zip(batches.batch_indices(0), batches.epoch(0), strict=True):
        assert y.shape == x.shape
        np.testing.assert_array_equal(y, labels[rows, : x.shape[1]])
    with pytest.raises(ValueError, match="per-token targets"):
        BucketedBatches(ids, labels[:, :5], batch_size=8, per_token_targets=True)
    with pytest.raises(ValueError, match="rows"):
        BucketedBatches(ids, labels[:5, 0], batch_size=8)


def test_dataset_runs_the_epochs_on_with_a_dynamic_sequence_axis():
    ids = padded_ids(50, 20)
    batches = BucketedBatches(ids, np.arange(50, dtype=np.int32), batch_size=16, seed=2)
    dataset = batches.dataset()
    x_spec, y_spec = dataset.element_spec
    assert x_spec.shape.as_list() == [None, None]
    assert y_spec.shape.as_list() == [None]
    expected = [*batches.epoch(0), *batches.epoch(1)]
    got = list(dataset.take(2 * len(batches)).as_numpy_iterator())
    assert len(got) == len(expected) == 8
    for (x, y), (want_x, want_y) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(x, want_x)
        np.testing.assert_array_equal(y, want_y)


# --- padding changes nothing --------------------------------------------------------------------


def test_bucketed_batches_give_the_losses_of_padding_to_the_longest():
    ids = padded_ids(96, 24)
    labels = (ids[:, 1] % 2).astype(np.int32)
    classifier = uk.ULMFiTClassifier(backbone=tiny.tiny_encoder(VOCAB), num_classes=2, seed=0)
    tagger = uk.ULMFiTTagger(backbone=tiny.tiny_encoder(VOCAB, seed=1), num_labels=2, seed=0)
    cases = [
        (classifier, labels, False, keras.losses.SparseCategoricalCrossentropy()),
        (tagger, tagger_labels(ids), True, MaskedSparseCategoricalCrossentropy()),
    ]
    for model, targets, per_token, loss in cases:
        batches = BucketedBatches(ids, targets, batch_size=16, per_token_targets=per_token)
        cut, padded, widths = [], [], []
        for rows, (x, y) in zip(batches.batch_indices(0), batches.epoch(0), strict=True):
            widths.append(x.shape[1])
            cut.append(float(loss(y, model(x, training=False))))
            padded.append(float(loss(targets[rows], model(ids[rows], training=False))))
        assert min(widths) < ids.shape[1]
        np.testing.assert_allclose(cut, padded, rtol=0, atol=1e-6)
        assert abs(np.mean(cut) - np.mean(padded)) < 1e-6


def test_sorted_prediction_equals_predicting_the_padded_array():
    ids = padded_ids(70, 18, seed=4)
    lengths = sequence_lengths(ids)
    classifier = uk.ULMFiTClassifier(backbone=tiny.tiny_encoder(VOCAB), num_classes=3, seed=0)
    np.testing.assert_allclose(
        predict_sorted(classifier, ids, 16), classifier.predict(ids, verbose=0), atol=1e-6
    )
    tagger = uk.ULMFiTTagger(backbone=tiny.tiny_encoder(VOCAB), num_labels=4, seed=0)
    got, want = predict_sorted(tagger, ids, 16), tagger.predict(ids, verbose=0)
    assert got.shape == want.shape
    real = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    np.testing.assert_allclose(got[real], want[real], atol=1e-6)
    attention = uk.BranchingAttentionClassifier(
        backbone=tiny.tiny_encoder(VOCAB), num_classes=2, seed=0
    )
    got, want = predict_sorted(attention, ids, 16), attention.predict(ids, verbose=0)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    np.testing.assert_allclose(got["predictions"], want["predictions"], atol=1e-6)


# --- fine_tune -------------------------------------------------------------------------------


class _Validation(keras.callbacks.Callback):
    """Writes a constant ``val_score``: fine_tune's checkpointing reads the monitor."""

    def on_epoch_end(self, epoch, logs=None) -> None:
        del epoch
        if logs is not None:
            logs["val_score"] = 0.0


def _setup(tmp_path, model, backbone, ids, targets, loss, per_token=False) -> TaskSetup:
    return TaskSetup(
        export_dir=tmp_path,
        spm_path=tmp_path / "unused.model",
        backbone=backbone,
        model=model,
        train_ids=ids,
        train_targets=targets,
        loss=loss,
        validation=_Validation(),
        monitor="val_score",
        mode="max",
        truncated=0,
        per_token_targets=per_token,
    )


def _spy_traces(monkeypatch, model) -> list[tuple]:
    """The input shape of each trace of the model's train step (a trace runs the Python)."""
    shapes: list[tuple] = []
    step = model.train_step

    def traced(data):
        shapes.append(tuple(data[0].shape))
        return step(data)

    monkeypatch.setattr(model, "train_step", traced)
    return shapes


def _config(tmp_path, **overrides) -> TrainingConfig:
    options = {"num_epochs": 4, "batch_size": 16, "lr": 1e-2, "unfreeze": "none", "seed": 0}
    return TrainingConfig(
        model_weights_cp=tmp_path, out_path=tmp_path / "out", **{**options, **overrides}
    )


def _spy_widths(monkeypatch) -> list[int]:
    widths: list[int] = []
    batch = BucketedBatches.batch

    def recorded(self, rows):
        x, y = batch(self, rows)
        widths.append(x.shape[1])
        return x, y

    monkeypatch.setattr(BucketedBatches, "batch", recorded)
    return widths


def test_fine_tune_on_bucketed_batches_trains_a_classifier_tracing_once(monkeypatch, tmp_path):
    ids = padded_ids(128, 32)
    labels = (ids[:, 1] < VOCAB // 2).astype(np.int32)
    backbone = tiny.tiny_encoder(VOCAB)
    model = uk.ULMFiTClassifier(backbone=backbone, num_classes=2, seed=0)
    traces, widths = _spy_traces(monkeypatch, model), _spy_widths(monkeypatch)
    setup = _setup(tmp_path, model, backbone, ids, labels, "sparse_categorical_crossentropy")
    losses = fine_tune(_config(tmp_path), setup)["loss"]
    assert losses[-1] < losses[0]
    assert (tmp_path / "out" / "model.keras").is_file()
    assert len(set(widths)) > 3 and min(widths) < ids.shape[1]
    # A dynamic sequence axis: no trace per batch width (Keras' own trace count is 2).
    assert traces and len(traces) <= 2 and all(shape[1] is None for shape in traces)


def test_fine_tune_on_bucketed_batches_trains_a_tagger_with_gradual_unfreezing(
    monkeypatch, tmp_path
):
    ids = padded_ids(128, 28, seed=1)
    backbone = tiny.tiny_encoder(VOCAB)
    model = uk.ULMFiTTagger(backbone=backbone, num_labels=2, seed=0)
    widths = _spy_widths(monkeypatch)
    setup = _setup(
        tmp_path,
        model,
        backbone,
        ids,
        tagger_labels(ids),
        MaskedSparseCategoricalCrossentropy(),
        per_token=True,
    )
    losses = fine_tune(_config(tmp_path, unfreeze="gradual", lr=2e-2), setup)["loss"]
    assert losses[-1] < losses[0]
    assert len(set(widths)) > 3


def test_fixed_seq_len_keeps_fixed_width_batches(monkeypatch, tmp_path):
    width = 20
    ids = padded_ids(64, width, seed=2)
    labels = (ids[:, 1] % 2).astype(np.int32)
    keras.utils.set_random_seed(0)
    backbone, _ = uk.build_encoder(tiny.tiny_config(VOCAB), fixed_seq_len=width, seed=0)
    model = uk.ULMFiTClassifier(backbone=backbone, num_classes=2, seed=0)
    traces = _spy_traces(monkeypatch, model)
    monkeypatch.setattr(batching.BucketedBatches, "__init__", _never)
    setup = _setup(tmp_path, model, backbone, ids, labels, "sparse_categorical_crossentropy")
    fine_tune(_config(tmp_path, num_epochs=2, fixed_seq_len=width), setup)
    assert traces and all(shape[1] == width for shape in traces)
    # The static-shape model predicts the padded array as it is.
    np.testing.assert_array_equal(predict_sorted(model, ids, 16), model.predict(ids, verbose=0))


def _never(*_args, **_kwargs):
    raise AssertionError("no bucketing with a fixed sequence length")
