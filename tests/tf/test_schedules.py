"""STLR and one-cycle learning rates equal their closed-form formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ulmfit_keras import OneCycleLR, SlantedTriangularLR  # noqa: E402


def stlr_formula(t: int, max_lr: float, total: int, cut_frac: float, ratio: float) -> float:
    """Howard & Ruder (2018), eq. 3."""
    cut = math.floor(total * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return max_lr * (1 + p * (ratio - 1)) / ratio


def one_cycle_formula(
    t: int, max_lr: float, total: int, pct: float, div: float, div_final: float
) -> float:
    """fastai's combined_cos(pct, max_lr/div, max_lr, max_lr/div_final)."""

    def cos_anneal(start, end, pos):
        return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2

    pos = t / total
    if pos < pct:
        return cos_anneal(max_lr / div, max_lr, pos / pct)
    return cos_anneal(max_lr, max_lr / div_final, (pos - pct) / (1 - pct))


@pytest.mark.parametrize("cut_frac, ratio", [(0.1, 32.0), (0.25, 10.0)])
def test_stlr_matches_formula(cut_frac, ratio):
    total, max_lr = 200, 0.01
    schedule = SlantedTriangularLR(max_lr, total, cut_frac=cut_frac, ratio=ratio)
    for t in [0, 1, 7, 19, 20, 21, 49, 50, 51, 100, 150, 199, 200]:
        expected = stlr_formula(t, max_lr, total, cut_frac, ratio)
        np.testing.assert_allclose(float(schedule(t)), expected, rtol=1e-5)


def test_stlr_landmarks():
    schedule = SlantedTriangularLR(0.01, 1000, cut_frac=0.1, ratio=32.0)
    np.testing.assert_allclose(float(schedule(0)), 0.01 / 32, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), 0.01, rtol=1e-6)  # the peak at cut
    np.testing.assert_allclose(float(schedule(1000)), 0.01 / 32, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(5000)), 0.01 / 32, rtol=1e-5)  # stays at the end


def test_one_cycle_matches_formula():
    total, max_lr = 400, 3e-3
    schedule = OneCycleLR(max_lr, total, pct_start=0.25, div=25.0, div_final=1e5)
    for t in [0, 1, 50, 99, 100, 101, 250, 399, 400]:
        expected = one_cycle_formula(t, max_lr, total, 0.25, 25.0, 1e5)
        np.testing.assert_allclose(float(schedule(t)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(0)), max_lr / 25, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), max_lr, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(400)), max_lr / 1e5, rtol=1e-4)


@pytest.mark.parametrize(
    "schedule",
    [SlantedTriangularLR(0.02, 50, cut_frac=0.2, ratio=16.0), OneCycleLR(0.02, 50, 0.3, 10.0)],
)
def test_config_round_trip_and_use_in_an_optimizer(schedule):
    clone = type(schedule).from_config(schedule.get_config())
    assert clone.get_config() == schedule.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    np.testing.assert_allclose(float(restored(17)), float(schedule(17)), rtol=1e-6)

    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    variable = keras.Variable(np.zeros(2, np.float32))
    for _ in range(3):
        optimizer.apply_gradients([(np.ones(2, np.float32), variable)])
    # SGD: each step moves by the rate at that step (0, 1, 2).
    expected = -sum(float(schedule(t)) for t in range(3))
    np.testing.assert_allclose(np.asarray(variable), expected, rtol=1e-5)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="cut_frac"):
        SlantedTriangularLR(0.01, 100, cut_frac=1.0)
    with pytest.raises(ValueError, match="pct_start"):
        OneCycleLR(0.01, 100, pct_start=0.0)
    with pytest.raises(ValueError, match="total_steps"):
        OneCycleLR(0.01, 0)
