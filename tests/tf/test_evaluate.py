"""Stage 06: the converted LM's perplexity in PyTorch and in TF agree within 0.1%."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from convert.pipeline import ConvertConfig, convert  # noqa: E402
from convert.testing import fastai_lm_state_dict, save_learner_file  # noqa: E402
from evaluation import perplexity  # noqa: E402
from pretraining_utils.demo_corpus import write_demo_corpus  # noqa: E402
from pretraining_utils.encode import EncodeConfig, encode_corpus  # noqa: E402
from pretraining_utils.spm import SpmConfig, build_spm  # noqa: E402
from tests.helpers import load_script  # noqa: E402

VOCAB, FIXED = 250, 16
RESULT = re.compile(
    r"perplexity: pytorch ([\d.]+)\s+tf \((\w+)\) ([\d.]+)\s+relative difference ([\d.e+-]+)"
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """An SPM model, a held-out corpus (binary and text ids) and a converted QRNN LM."""
    root = tmp_path_factory.mktemp("evaluate")
    write_demo_corpus(root / "raw.txt", max_bytes=60_000)
    spm = build_spm(SpmConfig(root / "raw.txt", VOCAB, root / "demo", num_threads=1)).model_path
    held_out = root / "held_out.txt"
    held_out.write_text(
        "\n".join((root / "raw.txt").read_text(encoding="utf-8").splitlines()[-40:]) + "\n",
        encoding="utf-8",
    )
    for fmt, target in (("bin", root / "corpus"), ("id", root / "ids.txt")):
        encode_corpus(EncodeConfig(held_out, spm, target, output_format=fmt, workers=1))
    # fastai-like initialisation, so that the perplexity is that of a plausible model
    state = fastai_lm_state_dict("qrnn", VOCAB, 16, 24, 2, init_range=None, seed=2)
    pth = save_learner_file(root / "lm.pth", state)
    convert(ConvertConfig(pth, spm, root / "export", fixed_seq_len=FIXED))
    return {"export": root / "export", "bin": root / "corpus", "ids": root / "ids.txt"}


def run_evaluate(*args: str):
    return CliRunner().invoke(load_script("06_evaluate_lm").main, list(args))


@pytest.mark.parametrize(
    "tf_model, corpus", [("keras", "bin"), ("saved_model", "ids")], ids=["keras-bin", "saved-ids"]
)
def test_perplexities_agree(setup, tf_model, corpus):
    result = run_evaluate(
        "--export-dir",
        str(setup["export"]),
        "--corpus-path",
        str(setup[corpus]),
        "--tf-model",
        tf_model,
        "--batch-size",
        "4",
        "--bptt",
        "12",  # shorter than the SavedModel's fixed 16: padded, masked, not scored
    )
    assert result.exit_code == 0, result.output
    match = RESULT.search(result.output)
    assert match, result.output
    torch_ppl, name, tf_ppl, relative = match.groups()
    assert name == tf_model
    assert 1.0 < float(torch_ppl) < 10 * VOCAB
    assert abs(float(tf_ppl) - float(torch_ppl)) / float(torch_ppl) <= 1e-3
    assert float(relative) <= 1e-3


def test_disagreement_is_an_error(setup, monkeypatch):
    real = perplexity._tf_scorer

    def one_percent_higher(cfg):
        score = real(cfg)
        return lambda x, y: score(x, y) + y.size * 0.01  # perplexity 1% higher

    monkeypatch.setattr(perplexity, "_tf_scorer", one_percent_higher)
    result = run_evaluate(
        "--export-dir", str(setup["export"]), "--corpus-path", str(setup["bin"]), "--bptt", "12"
    )
    assert result.exit_code != 0
    assert "perplexities disagree" in result.output
