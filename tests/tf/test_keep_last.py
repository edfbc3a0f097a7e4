"""``keep="last"``: fastai's long-document pooling in the Keras classifier."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import ulmfit_keras as uk
from tests.tf.tiny import tiny_encoder
from ulmfit_core.errors import InputError
from ulmfit_keras.layers.masked_concat_pool import pool_start
from ulmfit_tasks.config import ClassifierConfig


def test_pool_start_is_fastais_first_kept_chunk():
    lengths = np.array([5, 24, 25, 31, 32, 33, 72], np.int32)
    # fastai keeps the chunks starting at i (multiples of 8) with length - i <= 24.
    want = [min(i for i in range(0, n, 8) if n - i <= 24) for n in lengths]
    assert want == [0, 0, 8, 8, 8, 16, 48]
    got = keras.ops.convert_to_numpy(pool_start(keras.ops.convert_to_tensor(lengths), 24, 8))
    assert got.tolist() == want


def test_masked_concat_pool_window_on_post_padded_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 40, 4)).astype(np.float32)
    lengths = [40, 30, 9]
    mask = np.arange(40)[None, :] < np.array(lengths)[:, None]
    out = keras.ops.convert_to_numpy(
        uk.MaskedConcatPool(max_len=24, bptt=8)(x, mask=keras.ops.convert_to_tensor(mask))
    )
    for row, n in enumerate(lengths):
        start = min(i for i in range(0, n, 8) if n - i <= 24)
        kept = x[row, start:n]
        want = np.concatenate([x[row, n - 1], kept.max(axis=0), kept.mean(axis=0)])
        np.testing.assert_allclose(out[row], want, rtol=1e-6, atol=1e-6)
    whole = keras.ops.convert_to_numpy(uk.MaskedConcatPool()(x, mask=mask))
    assert not np.allclose(whole[0], out[0])  # the window changes the long rows
    np.testing.assert_allclose(whole[2], out[2], atol=1e-7)  # and not the short one
    with pytest.raises(ValueError, match="bptt <= max_len"):
        uk.MaskedConcatPool(max_len=4, bptt=8)


def test_keep_last_classifier_round_trips_through_model_keras(tmp_path: Path):
    model = uk.ULMFiTClassifier(
        backbone=tiny_encoder(60),
        num_classes=3,
        keep="last",
        max_len=24,
        bptt=8,
        bn_momentum=0.8,
        bn_epsilon=1e-3,
    )
    ids = np.random.default_rng(1).integers(4, 60, size=(2, 50)).astype(np.int32)
    ids[1, 30:] = 1
    want = keras.ops.convert_to_numpy(model(ids))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert (loaded.keep, loaded.max_len, loaded.bptt) == ("last", 24, 8)
    assert loaded.get_layer("head_batch_norm_1").epsilon == pytest.approx(1e-3)
    assert loaded.get_layer("head_batch_norm_1").momentum == pytest.approx(0.8)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(ids)), want, atol=1e-6)
    with pytest.raises(ValueError, match="keep must be one of"):
        uk.ULMFiTClassifier(backbone=tiny_encoder(60), num_classes=3, keep="middle")


def test_classifier_config_checks_keep(tmp_path: Path):
    common = {
        "model_weights_cp": tmp_path,
        "out_path": tmp_path / "out",
        "train_tsv": tmp_path / "t.tsv",
        "label_map": tmp_path / "l.txt",
    }
    with pytest.raises(InputError, match="--keep last is fastai's concat pooling"):
        ClassifierConfig(**common, keep="last", head="attention")
    with pytest.raises(InputError, match="--bptt must be between 1 and --max-len"):
        ClassifierConfig(**common, keep="last", bptt=80, max_len=72)
    with pytest.raises(InputError, match="unknown --keep"):
        ClassifierConfig(**common, keep="middle")
