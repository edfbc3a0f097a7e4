"""The PyTorch reference of fine-tuned task models (task_export.torch_reference) against Keras."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
sentencepiece = pytest.importorskip("sentencepiece")

from task_export.torch_reference import (  # noqa: E402
    RULES,
    TorchTaskModel,
    check_parity,
    port_keras_weights,
)
from ulmfit_tasks.classifier import train_classifier  # noqa: E402
from ulmfit_tasks.config import ClassifierConfig, RegressorConfig  # noqa: E402
from ulmfit_tasks.data import encode_texts  # noqa: E402
from ulmfit_tasks.regressor import train_regressor  # noqa: E402
from ulmfit_tasks.task_dir import SPM_FILE, load_task_model, read_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SENT = DATA / "sent200.tsv"
LABELS = DATA / "document_classification_labels.txt"
MAX_SEQ_LEN = 40
TEXTS = [
    "a clever blend of fact and fiction .",
    "dull",
    "the somber pacing and lack of dramatic fireworks make green dragon seem more like "
    "medicine than entertainment , and it goes on , and on , and on , and on far too long .",
    "boring and dull , but the actors try hard .",
]

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def common(export_dir: Path, out: Path, **extra) -> dict:
    return dict(
        model_weights_cp=export_dir,
        out_path=out,
        data_column="sentence",
        num_epochs=1,
        batch_size=64,
        lr=1e-2,
        max_seq_len=MAX_SEQ_LEN,
        unfreeze="none",
        **extra,
    )


def train(kind: str, export_dir: Path, out: Path) -> Path:
    if kind == "regressor":
        tsv = out.parent / "scores.tsv"
        with SENT.open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        lines = ["sentence\tscore"]
        lines += [f"{r['sentence']}\t{4.5 if r['sentiment'] == 'POSITIVE' else 1.0}" for r in rows]
        tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
        config = RegressorConfig(
            train_tsv=tsv, gold_column="score", normalize_labels=True, **common(export_dir, out)
        )
        return train_regressor(config).out_path
    head = "attention" if kind == "attention" else "classic"
    config = ClassifierConfig(
        train_tsv=SENT,
        label_map=LABELS,
        gold_column="sentiment",
        head=head,
        **common(export_dir, out, qrnn=kind == "qrnn"),
    )
    return train_classifier(config).out_path


@pytest.fixture(scope="module", params=["classic", "attention", "qrnn", "regressor"])
def trained(request, tmp_path_factory):
    """(kind, Keras model, task.json, padded ids) of a tiny task model trained for one epoch."""
    kind = request.param
    fixture = "qrnn_export_dir" if kind == "qrnn" else "export_dir"
    out = train(kind, request.getfixturevalue(fixture), tmp_path_factory.mktemp(kind) / "task")
    task = read_task(out, "regressor" if kind == "regressor" else "classifier")
    model = load_task_model(out, task)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(out / SPM_FILE))
    ids = encode_texts(spm.encode, TEXTS, MAX_SEQ_LEN).ids
    return kind, model, task, ids


def test_torch_reference_matches_keras_on_a_padded_batch(trained):
    kind, model, task, ids = trained
    lengths = (ids != 1).sum(axis=1)
    assert len(set(lengths)) == len(TEXTS) and lengths.max() == MAX_SEQ_LEN  # padded, and cut
    reference = TorchTaskModel.from_keras(model, task)
    report = check_parity(model, reference, ids, atol=1e-5)
    want = {"regressor": {"score"}, "attention": {"probabilities", "token_weights"}}
    assert set(report) == want.get(kind, {"probabilities"})
    main = reference.predict(ids)["score" if kind == "regressor" else "probabilities"]
    assert np.ptp(main, axis=0).max() > 1e-4  # the texts get different outputs: a real check
    print(f"{kind}: max |torch - keras| {report}")


def test_padding_never_changes_the_torch_outputs(trained):
    kind, model, task, ids = trained
    reference = TorchTaskModel.from_keras(model, task)
    batch = reference.predict(ids)
    for row in range(len(ids)):
        alone = ids[row : row + 1, : int((ids[row] != 1).sum())]
        single = reference.predict(alone)
        for name, value in single.items():
            in_batch = batch[name][row : row + 1]
            if name == "token_weights":  # (1, seq): the padded positions are 0
                in_batch = in_batch[:, : value.shape[1]]
            np.testing.assert_allclose(in_batch, value, atol=1e-6)
    if kind == "attention":
        weights = batch["token_weights"]
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
        assert np.all(weights[ids == 1] == 0.0)


def test_a_row_without_tokens_pools_to_what_keras_gives(trained):
    _, model, task, ids = trained
    with_empty = np.concatenate([ids, np.ones_like(ids[:1])])
    check_parity(model, TorchTaskModel.from_keras(model, task), with_empty, atol=1e-5)


@pytest.mark.parametrize("trained", ["classic"], indirect=True)
def test_the_weight_table_is_strict(trained):
    _, model, task, _ = trained
    reference = TorchTaskModel.from_keras(model, task)
    counts = {"once": 1, "layers": 2, "batch_norms": 2, "attention": 0, "aggregation": 0}
    rules = (*RULES["awd-lstm"], *RULES["pooled"][:-1])  # no row for predictions/bias
    with pytest.raises(RuntimeError, match=r"not read \['predictions/bias'\]"):
        port_keras_weights(model, reference, rules, counts)
    with pytest.raises(ValueError, match="describes a regressor"):
        TorchTaskModel.from_keras(model, {**task, "task": "regressor"})
