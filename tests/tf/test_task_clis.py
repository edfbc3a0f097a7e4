"""Task CLIs end to end on ../shared/data with a tiny export built in the test."""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
sentencepiece = pytest.importorskip("sentencepiece")
from click.testing import CliRunner  # noqa: E402

import ulmfit_keras as uk  # noqa: E402
from ulmfit_keras import ExponentialSweep, find_lr  # noqa: E402
from ulmfit_keras.word_alignment import pad_aligned  # noqa: E402
from ulmfit_tasks.classifier import train_classifier  # noqa: E402
from ulmfit_tasks.config import ClassifierConfig, RegressorConfig, TaggerConfig  # noqa: E402
from ulmfit_tasks.data import encode_texts  # noqa: E402
from ulmfit_tasks.predictors import (  # noqa: E402
    TaggerPredictor,
    TextClassifierPredictor,
    TextRegressorPredictor,
)
from ulmfit_tasks.regressor import train_regressor  # noqa: E402
from ulmfit_tasks.rendering import top_tokens  # noqa: E402
from ulmfit_tasks.tagger import align_sentences, train_tagger  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SENT = DATA / "sent200.tsv"
LABELS = DATA / "document_classification_labels.txt"
CLASSIFIER_FLAGS = [
    "--train-tsv",
    str(SENT),
    "--label-map",
    str(LABELS),
    "--data-column-name",
    "sentence",
    "--gold-column-name",
    "sentiment",
    "--batch-size",
    "64",
    "--max-seq-len",
    "40",
]

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def load_script(name: str):
    """The click command of ``scripts/NAME.py`` (script names start with digits)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_classifier_trains_and_reloads_identically(export_dir, tmp_path):
    config = ClassifierConfig(
        train_tsv=SENT,
        label_map=LABELS,
        model_weights_cp=export_dir,
        out_path=tmp_path / "out",
        data_column="sentence",
        gold_column="sentiment",
        num_epochs=3,
        batch_size=32,
        lr=1e-2,
        max_seq_len=40,
        unfreeze="gradual",
    )
    result = train_classifier(config)
    losses = result.history["loss"]
    assert losses[-1] < losses[0]
    assert len(result.history["val_accuracy"]) == 3
    assert {"model.keras", "task.json", "spm.model"} <= {p.name for p in result.out_path.iterdir()}
    predictor = TextClassifierPredictor(result.out_path)
    texts = ["a clever blend of fact and fiction .", "dull , boring and far too long"]
    probs, weights, ids = predictor.predict(texts)
    assert weights is None and probs.shape == (2, 2)
    np.testing.assert_allclose(probs, result.model.predict(ids, verbose=0), atol=1e-6)


def test_classifier_cli_attention_head_writes_heatmaps_and_answers_stdin(export_dir, tmp_path):
    out = tmp_path / "att"
    result = CliRunner().invoke(
        load_script("10_train_classifier"),
        [
            *CLASSIFIER_FLAGS,
            "--model-weights-cp",
            str(export_dir / "keras_weights"),
            "--out-path",
            str(out),
            "--head",
            "attention",
            "--interactive",
            "--save-best",
            "--lr-scheduler",
            "1cycle",
        ],
        input="a clever film .\n\nboring and dull\n",
    )
    assert result.exit_code == 0, result.output
    assert "validation accuracy: " in result.output
    assert f"attention heatmap: {out / 'attention.png'}" in result.output
    assert (out / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "attention.html").read_text(encoding="utf-8")
    assert page.count("<p>") == 5 and "rgba(255,0,0," in page
    answers = [line for line in result.output.splitlines() if "top tokens:" in line]
    assert len(answers) == 2  # the blank input line is skipped
    assert all("POSITIVE=" in line and "NEGATIVE=" in line for line in answers)


@pytest.mark.parametrize(
    ("extra", "tsv", "message"),
    [
        (
            ["--gold-column-name", "label"],
            None,
            "missing column(s) label; columns found: sentence, sentiment",
        ),
        (
            [],
            "sentence\tsentiment\nok\tMIXED\nfine\tPOSITIVE\n",
            "labels not in the label map: MIXED",
        ),
        ([], "", "the file is empty"),
        (["--qrnn"], None, "--qrnn is on but the export"),
    ],
)
def test_classifier_cli_bad_input(export_dir, tmp_path, extra, tsv, message):
    flags = list(CLASSIFIER_FLAGS)
    if tsv is not None:
        path = tmp_path / "bad.tsv"
        path.write_text(tsv, encoding="utf-8")
        flags[1] = str(path)
    result = CliRunner().invoke(
        load_script("10_train_classifier"),
        [*flags, *extra, "--model-weights-cp", str(export_dir), "--out-path", str(tmp_path / "o")],
    )
    assert result.exit_code == 1, result.output
    assert message in result.output


@pytest.fixture(scope="module")
def regression_tsv(tmp_path_factory) -> Path:
    """sent200 with a numeric score (4.5 positive, 1.0 negative) in a ``score`` column."""
    path = tmp_path_factory.mktemp("regression") / "scores.tsv"
    with SENT.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    lines = ["sentence\tscore"]
    lines += [f"{r['sentence']}\t{4.5 if r['sentiment'] == 'POSITIVE' else 1.0}" for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_regressor_trains_and_reloads_with_the_inverse_transform(
    export_dir, regression_tsv, tmp_path
):
    config = RegressorConfig(
        train_tsv=regression_tsv,
        model_weights_cp=export_dir,
        out_path=tmp_path / "reg",
        gold_column="score",
        num_epochs=2,
        batch_size=32,
        lr=1e-2,
        max_seq_len=40,
        normalize_labels=True,
        unfreeze="none",
    )
    result = train_regressor(config)
    assert result.history["loss"][-1] < result.history["loss"][0]
    predictor = TextRegressorPredictor(result.out_path)
    assert predictor.normalizer.mean == pytest.approx(2.79, abs=0.2)
    texts = ["a clever blend of fact and fiction .", "dull , boring and far too long"]
    scores = predictor.predict(texts)
    ids = predictor_ids(predictor, texts)
    raw = result.model.predict(ids, verbose=0)[:, 0]
    np.testing.assert_allclose(
        scores, raw * predictor.normalizer.std + predictor.normalizer.mean, rtol=1e-5
    )


def predictor_ids(predictor: TextRegressorPredictor, texts: list[str]) -> np.ndarray:
    return encode_texts(predictor.spm.encode, texts, predictor.max_seq_len).ids


def test_regressor_cli_interactive_prints_scores(export_dir, regression_tsv, tmp_path):
    result = CliRunner().invoke(
        load_script("11_train_regressor"),
        [
            "--train-tsv",
            str(regression_tsv),
            "--gold-column-name",
            "score",
            "--model-weights-cp",
            str(export_dir),
            "--out-path",
            str(tmp_path / "reg"),
            "--loss-fn",
            "mae",
            "--normalize-labels",
            "--max-seq-len",
            "40",
            "--batch-size",
            "64",
            "--interactive",
        ],
        input="a clever film .\nboring and dull\n",
    )
    assert result.exit_code == 0, result.output
    assert "validation MAE: " in result.output
    lines = result.stdout.splitlines()
    scores = [float(line) for line in lines[lines.index(f"model: {tmp_path / 'reg'}") + 1 :]]
    assert len(scores) == 2 and all(np.isfinite(scores))


def test_regressor_cli_rejects_non_numeric_targets(export_dir, tmp_path):
    result = CliRunner().invoke(
        load_script("11_train_regressor"),
        [
            "--train-tsv",
            str(SENT),
            "--gold-column-name",
            "sentiment",
            "--model-weights-cp",
            str(export_dir),
            "--out-path",
            str(tmp_path / "reg"),
        ],
    )
    assert result.exit_code == 1
    assert "line 2: gold value 'NEGATIVE' is not a number" in result.output


TAGGER_FLAGS = [
    "--label-map",
    str(DATA / "tagger_labels.json"),
    "--max-seq-len",
    "30",
    "--batch-size",
    "64",
]


@pytest.fixture(scope="module")
def small_conll(tmp_path_factory) -> Path:
    """The first 200 sentences of conll1000.jsonl (keeps the test quick on 2 cores)."""
    path = tmp_path_factory.mktemp("conll") / "conll200.jsonl"
    lines = (DATA / "conll1000.jsonl").read_text(encoding="utf-8").splitlines()[:200]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("align", ["first", "all"])
def test_tagger_trains_and_reloads_identically(export_dir, small_conll, tmp_path, align):
    config = TaggerConfig(
        train_jsonl=small_conll,
        label_map=DATA / "tagger_labels.json",
        model_weights_cp=export_dir,
        out_path=tmp_path / "tag",
        align=align,
        num_epochs=2,
        batch_size=32,
        lr=1e-2,
        max_seq_len=30,
        unfreeze="none",
    )
    result = train_tagger(config)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert 0.0 <= result.val_f1 <= 1.0
    assert result.truncated > 0  # long CoNLL sentences are cut to 30 subwords, and counted
    predictor = TaggerPredictor(result.out_path)
    sentences = [["John", "lives", "in", "Berlin", "."], ["Reuters", "said"]]
    tags = predictor.predict(sentences)
    assert [len(t) for t in tags] == [5, 2]
    assert set(tags[0]) <= set(predictor.tags)
    aligned, _ = align_sentences(predictor.spm, [(s, [0] * len(s)) for s in sentences], align, 30)
    ids, _ = pad_aligned(aligned)
    np.testing.assert_allclose(
        predictor.model.predict(ids, verbose=0), result.model.predict(ids, verbose=0), atol=1e-6
    )


def test_tagger_cli_interactive_prints_tags(export_dir, small_conll, tmp_path):
    result = CliRunner().invoke(
        load_script("12_train_tagger"),
        [
            *TAGGER_FLAGS,
            "--train-jsonl",
            str(small_conll),
            "--model-weights-cp",
            str(export_dir),
            "--out-path",
            str(tmp_path / "tag"),
            "--interactive",
        ],
        input="John lives in Berlin .\n",
    )
    assert result.exit_code == 0, result.output
    assert "validation entity F1: " in result.output
    tagged = result.stdout.splitlines()[-1].split()
    assert [pair.split("/")[0] for pair in tagged] == ["John", "lives", "in", "Berlin", "."]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[["ok", 0]]\n{"not": "a list"}\n', "line 2: expected a non-empty list of [word, tag]"),
        ("", "the file is empty"),
        ('[["ok", 0], ["x", 99]]\n', "line 1: tag ids not in the label map"),
    ],
)
def test_tagger_cli_bad_input(export_dir, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(
        load_script("12_train_tagger"),
        [
            *TAGGER_FLAGS,
            "--train-jsonl",
            str(path),
            "--model-weights-cp",
            str(export_dir),
            "--out-path",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_exponential_sweep_and_per_batch_losses():
    sweep = ExponentialSweep(1e-4, 1.0, steps=5)
    values = [float(sweep(step)) for step in range(5)]
    np.testing.assert_allclose(values, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-5)
    assert sweep.value(2) == pytest.approx(1e-2)
    # Rates so small that the weights stay put: the recorded loss of each batch must equal that
    # batch's loss computed directly (checks undoing Keras' running mean).
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    x = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")
    y = np.arange(12, dtype="float32")[:, None]
    result = find_lr(model, x, y, "mse", steps=4, batch_size=3, start=1e-12, end=1e-11)
    order = np.resize(np.random.default_rng(0).permutation(12), 12)
    predictions = model.predict(x[order], verbose=0)
    want = [
        float(np.mean((predictions[i : i + 3] - y[order][i : i + 3]) ** 2)) for i in (0, 3, 6, 9)
    ]
    np.testing.assert_allclose(result.losses, want, rtol=1e-4)
    assert len(result.lrs) == 4


@pytest.mark.parametrize("task", ["classifier", "regressor", "tagger"])
def test_cli_lr_finder_saves_a_plot_and_exits(
    export_dir, regression_tsv, small_conll, tmp_path, task
):
    script, data_flags = {
        "classifier": ("10_train_classifier", CLASSIFIER_FLAGS),
        "regressor": (
            "11_train_regressor",
            ["--train-tsv", str(regression_tsv), "--gold-column-name", "score"],
        ),
        "tagger": ("12_train_tagger", ["--train-jsonl", str(small_conll), *TAGGER_FLAGS]),
    }[task]
    out = tmp_path / "lrf"
    result = CliRunner().invoke(
        load_script(script),
        [
            *data_flags,
            "--model-weights-cp",
            str(export_dir),
            "--out-path",
            str(out),
            "--lr-finder",
            "12",
            "--batch-size",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    # The sweep stops early once the loss diverges (fastai's rule), so at most 12 steps.
    assert re.search(r"LR finder: ([2-9]|1[0-2]) steps, suggested lr \d", result.output)
    assert (out / "lr_finder.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "model.keras").exists()  # the finder does not train a model to keep


def test_top_tokens_orders_by_weight():
    pieces = ["<s>", "▁good", "▁film", "</s>"]
    assert top_tokens(pieces, np.array([0.1, 0.6, 0.2, 0.1, 0.0]), k=2) == [
        ("▁good", pytest.approx(0.6)),
        ("▁film", pytest.approx(0.2)),
    ]


def test_classifier_from_hub_fine_tunes_the_saved_model(export_dir, tmp_path):
    out = tmp_path / "hub"
    result = CliRunner().invoke(
        load_script("10_train_classifier"),
        [
            *CLASSIFIER_FLAGS,
            "--model-weights-cp",
            str(export_dir),
            "--out-path",
            str(out),
            "--model-type",
            "from_hub",
            "--num-epochs",
            "2",
            "--lr",
            "1e-2",
            "--interactive",
        ],
        input="a clever film .\n",
    )
    assert result.exit_code == 0, result.output
    assert "from_hub: fine-tuning the SavedModel" in result.output
    assert "training groups ['lstm_1', 'head']" in result.output  # gradual unfreezing
    assert "AWD weight-drop callback: p=0.10 on lstm_0_lstm_cell_recurrent_kernel" in result.output
    assert "POSITIVE=" in result.stdout.splitlines()[-1]
    predictor = TextClassifierPredictor(out)  # loads with safe_mode=False (task.json says hub)
    assert predictor.task["model_type"] == "from_hub"
    # The top LSTM trained in epoch 2; the embedding stayed frozen (2 epochs).
    pretrained = {w.name: w.numpy() for w in uk.SavedModelEncoder(export_dir).weights}
    tuned = {w.name: w.numpy() for w in predictor.model.backbone.weights}
    assert sorted(tuned) == sorted(pretrained)
    kernel = "lstm_1_lstm_cell_kernel"
    assert not np.array_equal(tuned[kernel], pretrained[kernel])
    np.testing.assert_array_equal(
        tuned["encoder_embedding_embeddings"], pretrained["encoder_embedding_embeddings"]
    )
    texts = ["a clever blend of fact and fiction ."]
    first, _, _ = predictor.predict(texts)
    again, _, _ = TextClassifierPredictor(out).predict(texts)
    np.testing.assert_array_equal(first, again)


def test_classifier_cli_flags_reach_the_model(export_dir, tmp_path):
    out = tmp_path / "flags"
    result = CliRunner().invoke(
        load_script("10_train_classifier"),
        [
            *CLASSIFIER_FLAGS,
            "--test-tsv",
            str(SENT),
            "--model-weights-cp",
            str(export_dir),
            "--out-path",
            str(out),
            "--no-batch-norm",
            "--awd-off",
            "--unfreeze",
            "none",
            "--max-seq-len",
            "10",
            "--fixed-seq-len",
            "12",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "sequences truncated to 10 tokens" in result.output  # counted, logged, no error
    model = TextClassifierPredictor(out).model
    assert not [layer for layer in model.layers if "batch_norm" in layer.name]
    assert model.input.shape == (None, 12)
    lstm = model.backbone.recurrent_layers[0]
    assert lstm.get_config()["weight_p"] == 0.0
