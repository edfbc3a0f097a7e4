"""Stage 13 on a tagger: every artifact tags each word as the Keras model and TaggerPredictor."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from task_export import parity
from task_export.convert import ALLOWED_CUSTOM_OPS
from task_export.pipeline import export_task
from task_export.runtimes import load_onnx, load_saved_model, load_tflite
from task_export.tagger_parity import read_tagged_texts
from tests.helpers import SHARED_DATA, load_script
from ulmfit_core.ids import PAD_ID
from ulmfit_keras.word_alignment import word_predictions
from ulmfit_tasks.config import TaggerConfig
from ulmfit_tasks.predictors import TaggerPredictor
from ulmfit_tasks.tagger import encode_sentences, train_tagger
from ulmfit_tasks.task_dir import MODEL_FILE

CONLL = SHARED_DATA / "conll1000.jsonl"
TAG_MAP = SHARED_DATA / "tagger_labels.json"
MAX_SEQ_LEN = 24
ZERO_WIDTH_SPACE = "\u200b"  # SentencePiece's normalizer drops it: a word of no subword

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _jsonl(path: Path, start: int, stop: int) -> Path:
    lines = CONLL.read_text(encoding="utf-8").splitlines()[start:stop]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _spread_tags(task_dir: Path, texts: list[str]) -> None:
    """A random tag head over standardized features, so that words get many different tags: a
    tiny tagger trained for seconds tags every word O (identical O's would prove little), and
    the tiny encoder's outputs hardly vary (std ~0.005)."""
    predictor = TaggerPredictor(task_dir)
    ids, _ = encode_sentences(predictor.spm, [text.split() for text in texts], MAX_SEQ_LEN)
    model = predictor.model
    features = keras.Model(model.input, model.get_layer("tagger_dropout").output)
    real = features.predict(ids, verbose=0)[ids != PAD_ID]
    mean, std = real.mean(axis=0), real.std(axis=0)
    head = model.get_layer("tag_predictions")
    # Small: the argmax does not depend on the scale, but the float diffs grow with it.
    kernel = np.random.default_rng(0).normal(0.0, 0.5, head.kernel.shape)
    head.set_weights([kernel / std[:, np.newaxis], -(mean / std) @ kernel])
    model.save(task_dir / MODEL_FILE)


@pytest.fixture(scope="module")
def tagger_export(export_dir, tmp_path_factory):
    """A tiny AWD-LSTM tagger exported in every format, 30 CoNLL sentences as validation."""
    root = tmp_path_factory.mktemp("tagger")
    config = TaggerConfig(
        train_jsonl=_jsonl(root / "train.jsonl", 0, 100),
        label_map=TAG_MAP,
        model_weights_cp=export_dir,
        out_path=root / "task",
        num_epochs=1,
        batch_size=32,
        lr=1e-2,
        max_seq_len=MAX_SEQ_LEN,
        unfreeze="none",
    )
    task_dir = train_tagger(config).out_path
    validation = _jsonl(root / "valid.jsonl", 200, 230)
    texts, golds = read_tagged_texts(task_dir, validation)
    _spread_tags(task_dir, texts)
    result = export_task(task_dir, root / "export", texts=texts, golds=golds)
    return task_dir, validation, result


def test_every_tagger_artifact_matches_keras_word_by_word(tagger_export):
    _, _, result = tagger_export
    report = json.loads((result.out_path / "report.json").read_text(encoding="utf-8"))
    tags = list(json.loads(TAG_MAP.read_text(encoding="utf-8")).values())
    assert report["task"] == "tagger" and report["labels"] == tags
    assert (result.out_path / "labels.txt").read_text(encoding="utf-8").split() == tags
    assert {"tags", "subword_tags", "probabilities", "tokens"} <= set(report["outputs"])
    artifacts = report["artifacts"]
    assert set(artifacts) == {"saved_model", "tflite", "tflite_int8", "onnx", "onnx_int8"}
    assert artifacts["onnx_int8"]["parity"]["tag_agreement"] >= 0.99
    for fmt in ("saved_model", "tflite", "onnx"):
        figures = artifacts[fmt]["parity"]
        assert figures["texts"] == 30 + len(parity.probe_texts(MAX_SEQ_LEN)), fmt
        assert figures["max_abs_diff"] <= 1e-5, fmt
        assert figures["tag_agreement"] == 1.0, fmt
        assert figures["subword_tag_agreement"] == 1.0, fmt
        assert figures["word_accuracy"] == figures["keras_word_accuracy"], fmt
        assert figures["entity_f1"] == figures["keras_entity_f1"], fmt
    for fmt in ("saved_model", "tflite", "tflite_int8"):
        assert artifacts[fmt]["parity"]["tokens_identical"] is True, fmt
    int8 = artifacts["tflite_int8"]["parity"]
    assert int8["tag_agreement"] >= 0.99
    assert 0.0 <= int8["entity_f1"] <= 1.0 and 0.0 <= int8["word_accuracy"] <= 1.0
    for fmt in ("tflite", "tflite_int8"):
        ops = artifacts[fmt]["ops"]
        assert [op for op in ops if not op.isupper()] == sorted(ALLOWED_CUSTOM_OPS), fmt
        assert not any(op.startswith("Flex") for op in ops), fmt


def _sentences(predictor: TaggerPredictor) -> list[list[str]]:
    """A short sentence, one with a word of no subword, one far longer than MAX_SEQ_LEN
    subwords, none, and one with a no-break space (which stays inside its word)."""
    for line in CONLL.read_text(encoding="utf-8").splitlines()[300:]:
        long = [word for word, _ in json.loads(line)]
        if sum(len(p) for p in predictor.spm.encode(long)) > 2 * MAX_SEQ_LEN:
            break
    return [
        ["John", "lives", "in", "Berlin", "."],
        ["EU", ZERO_WIDTH_SPACE, "rejects", "German", "call"],
        long,
        [],
        ["Peter\u00a0Blackburn", "said"],
    ]


def _strings(array) -> list[list[str]]:
    return [[t.decode() if isinstance(t, bytes) else str(t) for t in row] for row in array]


def test_exported_tags_are_tagger_predictors(tagger_export):
    task_dir, _, result = tagger_export
    predictor = TaggerPredictor(task_dir)
    assert predictor.spm.encode(ZERO_WIDTH_SPACE) == []
    sentences = _sentences(predictor)
    expected = predictor.predict(sentences)
    assert len({tag for row in expected for tag in row}) >= 4  # not one tag for every word
    ids, aligned = encode_sentences(predictor.spm, sentences, MAX_SEQ_LEN)
    assert aligned[1].word_starts[1] == -1 and -1 in aligned[2].word_starts
    assert all(
        expected[i][w] == "O" for i in (1, 2) for w, s in enumerate(aligned[i].word_starts) if s < 0
    )
    texts = np.asarray([" ".join(words) for words in sentences], dtype=object)
    for fmt, run in (
        ("saved_model", load_saved_model(result.out_path / "saved_model")),
        ("tflite", load_tflite(result.out_path / "model.tflite")),
    ):
        out = run(text=texts)
        found = _strings(out["tags"])
        assert [row[: len(words)] for row, words in zip(found, sentences, strict=True)] == expected
        assert all(not any(row[len(w) :]) for row, w in zip(found, sentences, strict=True)), fmt
        tokens, subword_tags = _strings(out["tokens"]), _strings(out["subword_tags"])
        assert [[bool(t) for t in row] for row in tokens] == [
            [bool(t) for t in row] for row in subword_tags
        ], fmt
    out = load_onnx(result.out_path / "model.onnx")(
        token_ids=ids, mask=(ids != PAD_ID).astype(np.int32)
    )
    onnx_tags = [
        [predictor.tags[t] for t in word_predictions(row, seq.word_starts)]
        for row, seq in zip(out["subword_tag_ids"], aligned, strict=True)
    ]
    assert onnx_tags == expected


def test_the_server_returns_each_word_with_its_tag(tagger_export):
    from serving import ExportedModel

    task_dir, _, result = tagger_export
    predictor = TaggerPredictor(task_dir)
    sentences = _sentences(predictor)
    model = ExportedModel.load(result.out_path)
    rows = model.predict([" ".join(words) for words in sentences])
    assert [row["words"] for row in rows] == sentences
    assert [row["tags"] for row in rows] == predictor.predict(sentences)
    assert all(len(row["subword_tags"]) == len(row["tokens"]) for row in rows)


def test_cli_exports_a_tagger_with_its_test_jsonl(tagger_export, tmp_path):
    task_dir, validation, _ = tagger_export
    run = CliRunner().invoke(
        load_script("13_export_task").main,
        [
            "--task-dir",
            str(task_dir),
            "--out-path",
            str(tmp_path / "export"),
            "--formats",
            "saved_model",
            "--test-jsonl",
            str(validation),
        ],
    )
    assert run.exit_code == 0, run.output
    first = json.loads(validation.read_text(encoding="utf-8").splitlines()[0])
    answer = run.stdout.splitlines()[-1].split(" -> ", 1)[1].rsplit("; max |diff|", 1)[0]
    pairs = answer.split()
    assert [pair.rsplit("/", 1)[0] for pair in pairs] == [word for word, _ in first]
    report = json.loads((tmp_path / "export" / "report.json").read_text(encoding="utf-8"))
    assert "keras_entity_f1" in report["artifacts"]["saved_model"]["parity"]


def test_a_tagger_that_fails_parity_leaves_nothing(tagger_export, tmp_path, monkeypatch):
    task_dir, _, _ = tagger_export
    monkeypatch.setattr(parity, "FLOAT_TOLERANCE", -1.0)
    with pytest.raises(parity.ParityError, match="saved_model does not match the Keras model"):
        export_task(task_dir, tmp_path / "export", formats=("saved_model",), texts=["a b"])
    assert list(tmp_path.iterdir()) == []
