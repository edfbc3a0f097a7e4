"""Stage 13: the export of trained task directories, each artifact proven equal to Keras."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from task_export import parity
from task_export.convert import ALLOWED_CUSTOM_OPS
from task_export.pipeline import export_task
from ulmfit_core.errors import InputError
from ulmfit_tasks.classifier import train_classifier
from ulmfit_tasks.config import ClassifierConfig, RegressorConfig
from ulmfit_tasks.data import read_tsv
from ulmfit_tasks.regressor import train_regressor

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SENT = DATA / "sent200.tsv"
LABELS = DATA / "document_classification_labels.txt"
TEXTS = ["a clever blend of fact and fiction .", "dull , boring and far too long", ""]


def _classifier(export_dir: Path, out: Path, head: str, qrnn: bool = False) -> Path:
    config = ClassifierConfig(
        train_tsv=SENT,
        label_map=LABELS,
        model_weights_cp=export_dir,
        out_path=out,
        data_column="sentence",
        gold_column="sentiment",
        num_epochs=1,
        batch_size=32,
        lr=1e-2,
        max_seq_len=24,
        head=head,
        qrnn=qrnn,
    )
    return train_classifier(config).out_path


@pytest.fixture(scope="module")
def attention_export(export_dir, tmp_path_factory):
    """An AWD-LSTM attention classifier, exported in every format with sent200 as validation."""
    root = tmp_path_factory.mktemp("attention")
    task_dir = _classifier(export_dir, root / "task", "attention")
    examples = read_tsv(SENT, "sentence", "sentiment")
    texts, golds = list(examples.texts[:40]), list(examples.golds[:40])
    result = export_task(task_dir, root / "export", texts=texts, golds=golds)
    return task_dir, result


def test_every_artifact_matches_keras_and_runs_builtin_ops(attention_export):
    _, result = attention_export
    report = json.loads((result.out_path / "report.json").read_text(encoding="utf-8"))
    assert report["task"] == "classifier" and report["head"] == "attention"
    assert report["labels"] == LABELS.read_text(encoding="utf-8").split()
    artifacts = report["artifacts"]
    assert set(artifacts) == {
        "saved_model",
        "tflite",
        "tflite_int8",
        "onnx",
        "onnx_int8",
        "onnx_text",
    }
    for fmt in ("saved_model", "tflite", "onnx", "onnx_text"):
        figures = artifacts[fmt]["parity"]
        assert figures["max_abs_diff"] <= 1e-5, fmt
        assert figures["token_weights_max_abs_diff"] <= 1e-5, fmt
        assert figures["label_agreement"] == 1.0, fmt
        assert figures["texts"] == 40 + len(parity.probe_texts(24))
    assert artifacts["tflite"]["parity"]["tokens_identical"] is True
    assert artifacts["onnx_text"]["parity"]["tokens_identical"] is True
    assert "SentencepieceTokenizer" in artifacts["onnx_text"]["ops"]
    # ONNX's own LSTM op, one kernel per layer, not a Loop of small ops per step
    assert artifacts["onnx"]["converter"] == "torch.onnx (native LSTM op)"
    assert "LSTM" in artifacts["onnx"]["ops"] and "Loop" not in artifacts["onnx"]["ops"]
    for fmt in ("tflite_int8", "onnx_int8"):
        assert artifacts[fmt]["parity"]["label_agreement"] >= 0.99, fmt
    assert "DynamicQuantizeLSTM" in artifacts["onnx_int8"]["ops"]
    assert artifacts["onnx_int8"]["bytes"] < 0.6 * artifacts["onnx"]["bytes"]  # tiny: overhead
    assert "accuracy" in artifacts["tflite_int8"]["parity"]
    for fmt in ("tflite", "tflite_int8"):
        ops = artifacts[fmt]["ops"]
        # The SentencePiece op only: the word splitter is a tagger's.
        assert [op for op in ops if not op.isupper()] == [ALLOWED_CUSTOM_OPS[0]]
        assert not any(op.startswith("Flex") for op in ops)
    for name in ("saved_model", "model.tflite", "model_int8.tflite", "model.onnx", "spm.model"):
        assert (result.out_path / name).exists(), name
    assert (result.out_path / "labels.txt").read_text(encoding="utf-8").split() == report["labels"]
    assert not (result.out_path.parent / "export.partial").exists()


def test_readme_deploy_snippets(attention_export):
    """The README's Deploy snippets, as they are printed there."""
    _, result = attention_export
    export = str(result.out_path)
    # --- README: SavedModel ---
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the SentencePiece op of the graph)

    model = tf.saved_model.load(f"{export}/saved_model")
    out = model.signatures["serving_default"](text=tf.constant(["a clever film ."]))
    saved_label = out["label"].numpy()[0].decode()
    # --- README: TFLite ---
    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    from tensorflow_text.core.pybinds import tflite_registrar

    interpreter = InterpreterWithCustomOps(
        model_path=f"{export}/model.tflite",
        custom_op_registerers=[tflite_registrar.AddFastSentencepieceTokenize],
    )
    runner = interpreter.get_signature_runner("serving_default")
    out_tflite = runner(text=np.array(["a clever film ."], dtype=object))
    tflite_label = out_tflite["label"][0].decode()
    # --- README: ONNX ---
    import onnxruntime
    import sentencepiece

    spm = sentencepiece.SentencePieceProcessor(model_file=f"{export}/spm.model")
    max_seq_len = json.loads(Path(f"{export}/report.json").read_text())["max_seq_len"]
    ids = spm.encode("a clever film .", add_bos=True, add_eos=True)[:max_seq_len]
    token_ids = np.array([ids], dtype=np.int32)  # a batch: post-pad with 1 and mask 0 there
    session = onnxruntime.InferenceSession(f"{export}/model.onnx")
    (probabilities,) = session.run(
        ["probabilities"], {"token_ids": token_ids, "mask": np.ones_like(token_ids)}
    )
    # --- end ---
    # The strings-in ONNX runs where TensorFlow does not (task_export.isolated): in a child.
    onnx_text = """
import numpy as np
import onnxruntime
import onnxruntime_extensions

options = onnxruntime.SessionOptions()
options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
session = onnxruntime.InferenceSession(f"{export}/model_text.onnx", options)
(text_probabilities, text_label) = session.run(
    ["probabilities", "label"], {"text": np.array(["a clever film ."], dtype=object)}
)
"""
    report_line = "print(text_label[0], *text_probabilities[0])"
    child = f"export = {export!r}\n{onnx_text}\n{report_line}\n"
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    text_label, *text_probabilities = done.stdout.split()
    labels = (result.out_path / "labels.txt").read_text(encoding="utf-8").split()
    assert saved_label == tflite_label == text_label == labels[int(np.argmax(probabilities[0]))]
    np.testing.assert_allclose(out_tflite["probabilities"], out["probabilities"].numpy(), atol=1e-5)
    np.testing.assert_allclose(probabilities, out["probabilities"].numpy(), atol=1e-5)
    np.testing.assert_allclose(
        [float(p) for p in text_probabilities], out["probabilities"].numpy()[0], atol=1e-5
    )


def test_qrnn_classifier_exports_with_parity(qrnn_export_dir, tmp_path):
    task_dir = _classifier(qrnn_export_dir, tmp_path / "task", "classic", qrnn=True)
    result = export_task(task_dir, tmp_path / "export", texts=TEXTS)
    for fmt, entry in result.report["artifacts"].items():
        if not fmt.endswith("_int8"):
            assert entry["parity"]["max_abs_diff"] <= 1e-5, fmt
    assert "token_weights" not in result.report["outputs"]
    assert result.report["artifacts"]["onnx"]["converter"] == "tf2onnx (fixed length 24)"


def test_regressor_export_scores_in_label_units(export_dir, tmp_path):
    examples = read_tsv(SENT, "sentence", "sentiment")
    tsv = tmp_path / "scores.tsv"
    lines = [
        f"{t}\t{4.5 if g == 'POSITIVE' else 1.0}\n"
        for t, g in zip(examples.texts, examples.golds, strict=True)
    ]
    tsv.write_text("sentence\tscore\n" + "".join(lines), encoding="utf-8")
    config = RegressorConfig(
        train_tsv=tsv,
        model_weights_cp=export_dir,
        out_path=tmp_path / "reg",
        gold_column="score",
        num_epochs=1,
        batch_size=32,
        lr=1e-2,
        max_seq_len=24,
        normalize_labels=True,
        unfreeze="none",
    )
    task_dir = train_regressor(config).out_path
    result = export_task(
        task_dir, tmp_path / "export", formats=("saved_model", "tflite", "onnx"), texts=TEXTS
    )
    for entry in result.report["artifacts"].values():
        assert entry["parity"]["max_abs_diff"] <= 1e-5
    from task_export.runtimes import load_tflite

    scores = load_tflite(result.out_path / "model.tflite")(text=np.array(TEXTS, dtype=object))
    assert scores["score"].shape == (3,) and 0.0 < float(np.mean(scores["score"])) < 6.0


def test_a_failed_parity_check_leaves_nothing(attention_export, tmp_path, monkeypatch):
    task_dir, _ = attention_export
    monkeypatch.setattr(parity, "FLOAT_TOLERANCE", -1.0)
    with pytest.raises(parity.ParityError, match="saved_model does not match the Keras model"):
        export_task(task_dir, tmp_path / "export", formats=("saved_model",), texts=TEXTS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--formats", "saved_model,jpeg"], "--formats: unknown jpeg"),
        (["--tflite-seq-len", "2"], "--tflite-seq-len must be at least 3"),
    ],
)
def test_cli_bad_input(attention_export, tmp_path, args, message):
    task_dir, _ = attention_export
    out = tmp_path / "export"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "13_export_task.py"),
            "--task-dir",
            str(task_dir),
            "--out-path",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 1 and message in proc.stderr
    assert not out.exists()


def test_a_directory_without_a_task_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"no task\.json; train a task into it"):
        export_task(tmp_path, tmp_path / "export")


def test_readme_deploy_snippets_are_the_tested_ones():
    """Every line of the README's Deploy Python blocks is a line of the snippet test above."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    deploy = readme.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    blocks = [block.split("```", 1)[0] for block in deploy.split("```python\n")[1:]]
    assert len(blocks) == 4
    source = Path(__file__).read_text(encoding="utf-8")
    tested = {line.strip() for line in source.split("--- README: SavedModel ---")[1].splitlines()}
    for block in blocks:
        missing = [line for line in block.splitlines() if line.strip() not in tested]
        assert missing == [], missing


def test_onnx_text_formats_are_checked_before_anything_is_written():
    from types import SimpleNamespace

    from task_export.layout import FORMATS
    from task_export.pipeline import _formats_for

    classifier, tagger = SimpleNamespace(kind="classifier"), SimpleNamespace(kind="tagger")
    assert _formats_for(classifier, ("onnx_text", "onnx")) == ("onnx", "onnx_text")
    assert "onnx_text" not in _formats_for(tagger, FORMATS)  # the default: left out quietly
    with pytest.raises(InputError, match="a tagger's ONNX takes ids"):
        _formats_for(tagger, ("onnx", "onnx_text"))
    for derived in ("onnx_text", "onnx_int8"):
        with pytest.raises(InputError, match="add onnx to --formats"):
            _formats_for(classifier, ("saved_model", derived))
