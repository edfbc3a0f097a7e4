"""Stage 05 refuses bad inputs: a clear message, a non-zero exit, no output directory.

Every case runs the real CLI (``scripts/05_convert.py`` through click's ``CliRunner``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sentencepiece

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from convert import mapping  # noqa: E402
from convert.testing import fastai_lm_state_dict, save_learner_file  # noqa: E402
from pretraining_utils.demo_corpus import write_demo_corpus  # noqa: E402
from pretraining_utils.spm import SpmConfig, build_spm  # noqa: E402
from tests.helpers import load_script  # noqa: E402
from ulmfit_core.lm_config import LMConfig  # noqa: E402

VOCAB, EMB, HIDDEN, LAYERS = 200, 8, 12, 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad_input") / "raw.txt"
    write_demo_corpus(path, max_bytes=60_000)
    return path


@pytest.fixture(scope="module")
def spm_model(corpus) -> Path:
    return build_spm(SpmConfig(corpus, VOCAB, corpus.parent / "demo", num_threads=1)).model_path


def lstm_state(**kwargs) -> dict:
    return fastai_lm_state_dict("awd-lstm", VOCAB, EMB, HIDDEN, LAYERS, **kwargs)


def run_convert(pth: Path, spm: Path, out: Path, *flags: str):
    args = ["--pretrained-model", str(pth), "--spm-model-file", str(spm), "--out-path", str(out)]
    return CliRunner().invoke(load_script("05_convert").main, [*args, *flags])


def assert_refused(result, out: Path, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))  # no temporary directory either


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_pickle_that_would_run_code(spm_model, tmp_path):
    marker = tmp_path / "marker"
    torch.save({"model": lstm_state(), "opt": _WritesMarker(marker)}, tmp_path / "evil.pth")
    result = run_convert(tmp_path / "evil.pth", spm_model, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "refusing to load", "arbitrary code")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "not-zip"])
def test_damaged_file(spm_model, tmp_path, damage):
    good = save_learner_file(tmp_path / "good.pth", lstm_state())
    bad = tmp_path / "bad.pth"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    else:
        bad.write_text("this is not a torch file\n")
    result = run_convert(bad, spm_model, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "not a torch zip archive", str(bad))


def test_unknown_key(spm_model, tmp_path):
    state = lstm_state()
    state["0.rnns.1.extra_gate"] = torch.zeros(3)
    pth = save_learner_file(tmp_path / "lm.pth", state)
    result = run_convert(pth, spm_model, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "unknown state-dict keys ['0.rnns.1.extra_gate']")


def test_missing_key(spm_model, tmp_path):
    state = lstm_state()
    del state["0.rnns.1.module.bias_hh_l0"]
    pth = save_learner_file(tmp_path / "lm.pth", state)
    result = run_convert(pth, spm_model, tmp_path / "out")
    assert_refused(
        result, tmp_path / "out", "missing state-dict keys ['0.rnns.1.module.bias_hh_l0']"
    )


def test_wrong_shape(spm_model, tmp_path):
    state = lstm_state()
    state["1.decoder.bias"] = torch.zeros(VOCAB + 1)
    pth = save_learner_file(tmp_path / "lm.pth", state)
    result = run_convert(pth, spm_model, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "1.decoder.bias (201,)", "lm_head/bias", "(200,)")


def test_embedding_copy_that_differs(spm_model, tmp_path):
    state = lstm_state()
    state["0.encoder_dp.emb.weight"] = state["0.encoder.weight"] + 1
    pth = save_learner_file(tmp_path / "lm.pth", state)
    result = run_convert(pth, spm_model, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "0.encoder_dp.emb.weight", "differs")


def test_spm_vocab_differs_from_embedding(corpus, tmp_path):
    other = build_spm(SpmConfig(corpus, VOCAB + 50, tmp_path / "other", num_threads=1))
    pth = save_learner_file(tmp_path / "lm.pth", lstm_state())
    result = run_convert(pth, other.model_path, tmp_path / "out")
    assert_refused(
        result, tmp_path / "out", "SPM vocab size 250", "differs from the embedding's 200 rows"
    )


def test_spm_without_fastai_special_ids(corpus, tmp_path):
    sentencepiece.SentencePieceTrainer.train(  # sentencepiece's defaults: <unk> 0, <s> 1, </s> 2
        input=str(corpus), model_prefix=str(tmp_path / "plain"), vocab_size=VOCAB, minloglevel=2
    )
    pth = save_learner_file(tmp_path / "lm.pth", lstm_state())
    result = run_convert(pth, tmp_path / "plain.model", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "special ids", "are not fastai's")


def test_spm_other_than_the_sidecar_says(spm_model, tmp_path):
    config = LMConfig.create(
        "awd-lstm", VOCAB, emb_size=EMB, hidden_size=HIDDEN, n_layers=LAYERS, spm_model_sha256="ab"
    )
    pth = save_learner_file(tmp_path / "lm.pth", lstm_state(), config=config)
    result = run_convert(pth, spm_model, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "trained with an SPM model of sha256 ab")


def test_sidecar_that_contradicts_the_weights(spm_model, tmp_path):
    config = LMConfig.create("awd-lstm", VOCAB, emb_size=EMB, hidden_size=HIDDEN + 4, n_layers=2)
    pth = save_learner_file(tmp_path / "lm.pth", lstm_state(), config=config)
    result = run_convert(pth, spm_model, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "hidden_size: sidecar 16, weights 12")


def test_qrnn_flag_on_an_lstm_file(spm_model, tmp_path):
    pth = save_learner_file(tmp_path / "lm.pth", lstm_state())
    result = run_convert(pth, spm_model, tmp_path / "out", "--qrnn")
    assert_refused(result, tmp_path / "out", "--qrnn was given", "holds an awd-lstm model")


def test_layer_count_flag_that_contradicts_the_file(spm_model, tmp_path):
    pth = save_learner_file(tmp_path / "lm.pth", lstm_state())
    result = run_convert(pth, spm_model, tmp_path / "out", "--num-recurrent-layers", "3")
    assert_refused(result, tmp_path / "out", "--num-recurrent-layers 3", "has 2 recurrent layers")


def test_existing_output_dir(spm_model, tmp_path):
    pth = save_learner_file(tmp_path / "lm.pth", lstm_state())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_convert(pth, spm_model, out)
    assert result.exit_code != 0
    assert "already exists; pass --overwrite" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # untouched


def test_parity_failure_leaves_nothing(spm_model, tmp_path, monkeypatch):
    """The predecessor's LSTM bias (2 * bias_ih) is caught by the parity check."""
    monkeypatch.setitem(mapping.TRANSFORMS, "sum", lambda arrays: 2 * arrays[0])
    pth = save_learner_file(tmp_path / "lm.pth", lstm_state())
    result = run_convert(pth, spm_model, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "parity check failed", "lstm_0")
    assert "max |diff|" in result.output


def test_not_a_language_model(spm_model, tmp_path):
    pth = save_learner_file(tmp_path / "lm.pth", {"weight": torch.from_numpy(np.ones(3))})
    result = run_convert(pth, spm_model, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "not a fastai language model")
