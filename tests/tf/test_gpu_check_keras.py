"""The GPU check's TensorFlow part (benchmarks/gpu_check_keras.py) on the CPU: the no-GPU path,
the converted encoder it builds, and its cuDNN-vs-loop comparison with both runs on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from benchmarks import gpu_check_keras as gk  # noqa: E402
from benchmarks.gpu_check_report import FAIL, PASS, SKIP, Tolerance, rows_from_json  # noqa: E402
from convert.reference import build_reference  # noqa: E402
from convert.testing import fastai_lm_state_dict  # noqa: E402
from ulmfit_torch.state_dict import read_lm_state  # noqa: E402

TINY = gk.Sizes(vocab_size=50, emb_size=8, hidden_size=12, n_layers=2, batch_size=3, seq_len=7)
ON_CPU = ("/CPU:0", "auto")  # stands in for the cuDNN run: Keras falls back to its loop


def test_without_a_gpu_it_skips_and_exits_0(monkeypatch, tmp_path):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda *_: [])
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(gk.main, ["--quick", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    rows = rows_from_json(json.loads(out.read_text(encoding="utf-8"))["rows"])
    assert [row.verdict for row in rows] == [SKIP, SKIP]
    assert all("sees no GPU" in row.figure for row in rows)
    assert "| SKIP" in result.output and "0 PASS, 0 FAIL, 2 SKIP" in result.output
    quiet = CliRunner().invoke(gk.main, ["--quick", "--json-out", str(out), "--no-table"])
    assert quiet.exit_code == 0 and "| SKIP" not in quiet.output


def test_help():
    result = CliRunner().invoke(gk.main, ["--help"])
    assert result.exit_code == 0
    assert "--quick" in result.output and "--json-out" in result.output


def test_converted_encoder_computes_the_fastai_model():
    """The encoder holds the ported fastai weights: it matches the PyTorch reference."""
    encoder = gk.converted_encoder(TINY, seed=0)
    state = fastai_lm_state_dict(
        "awd-lstm", TINY.vocab_size, TINY.emb_size, TINY.hidden_size, TINY.n_layers,
        init_range=None, seed=0,
    )  # fmt: skip
    reference = build_reference(read_lm_state(state))
    ids = np.random.default_rng(1).integers(4, TINY.vocab_size, (2, 9)).astype(np.int32)
    want = reference.run(ids)[f"lstm_{TINY.n_layers - 1}"]
    got = encoder(tf.constant(ids), training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_padded_batch_is_right_padded_and_has_full_rows():
    ids = gk.padded_batch(gk.Sizes(batch_size=5, seq_len=10, vocab_size=100))
    valid = ids != gk.PAD_ID
    lengths = valid.sum(axis=1)
    assert lengths[0] == 10 and lengths[-1] == 2
    for row, length in zip(valid, lengths, strict=True):  # right padding: valid, then pads
        assert row[:length].all() and not row[length:].any()


def test_parity_rows_with_both_runs_on_cpu():
    encoder = gk.converted_encoder(TINY)
    rows = gk.gpu_rows(TINY, fast=ON_CPU)
    assert [row.verdict for row in rows] == [PASS, PASS]
    assert all(row.value == 0.0 for row in rows)  # the same loop twice
    assert rows[0].setting.startswith("GPU vs CPU forward, 2x12, emb 8, 3x7 right-padded")
    forward, gradients = gk.cudnn_parity(encoder, gk.padded_batch(TINY), fast=ON_CPU)
    assert forward.max_diff == 0.0 and gradients.max_diff == 0.0
    assert [layer.use_cudnn for layer in encoder.recurrent_layers] == ["auto", "auto"]


def test_cudnn_is_required_on_the_gpu_side():
    """use_cudnn=True: without cuDNN the layer raises rather than quietly running the loop."""
    rows = gk.gpu_rows(TINY, fast=("/CPU:0", True))
    assert [row.verdict for row in rows] == [FAIL, FAIL]
    assert "cuDNN cannot run" in rows[0].figure


def test_gradients_are_compared_relative_to_their_scale():
    tol = Tolerance(atol=1e-4)
    big = np.array([1000.0, -500.0])
    assert tol.holds(gk.compare_scaled([big + 0.05], [big], tol).excess)
    assert not tol.holds(gk.compare_scaled([big + 5.0], [big], tol).excess)
    assert not tol.holds(gk.compare_scaled([np.array([np.nan, 0.0])], [big], tol).excess)
    assert np.isnan(gk.compare(np.zeros(2), np.zeros(3), tol).max_diff)
