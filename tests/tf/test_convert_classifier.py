"""Stage 05 on fastai text classifiers: parity with fastai's forward, long documents, BatchNorm,
the task directory (reload, --interactive-from, stage 13), and bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

from convert.classifier_convert import _build_keras, _parity, parity_texts
from convert.classifier_reference import ReferenceClassifier
from convert.classifier_testing import fastai_classifier_state_dict
from convert.pipeline import ConvertConfig, convert
from convert.verify import ParityError
from tests.tf.tiny import SENT, train_spm
from ulmfit_core.classifier_config import (
    CLASSIFIER_KEY,
    ClassifierHead,
    read_classifier_head,
    write_classifier_sidecar,
)
from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import LMConfig
from ulmfit_tasks.predictors import TextClassifierPredictor
from ulmfit_tasks.task_dir import load_task_model, read_task
from ulmfit_torch.checkpoint_io import load_pth, save_pth
from ulmfit_torch.classifier_state import read_classifier_state
from ulmfit_torch.state_dict import read_sidecar

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 120
EMB, HIDDEN = 16, 24
BPTT, MAX_LEN = 8, 24  # tiny windows: a 60-token text is several chunks and beyond max_len
LABELS = ["neg", "neutral", "pos"]
BN_EPS, BN_MOMENTUM = 1e-3, 0.2  # not PyTorch's defaults: a converter ignoring them fails


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    texts = [line.split("\t")[0] for line in SENT.read_text(encoding="utf-8").splitlines()[1:]]
    return train_spm(texts, tmp_path_factory.mktemp("cls_spm") / "m", vocab_size=VOCAB)


def write_classifier(
    directory: Path, arch: str, *, dropout_in_head: bool = True, n_layers: int = 2
) -> Path:
    """``directory/cls.pth`` + ``cls.json`` as stage 08 writes them (random weights)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = fastai_classifier_state_dict(
        arch,
        VOCAB,
        EMB,
        HIDDEN,
        n_layers,
        len(LABELS),
        lin_ftrs=(10,),
        seed=3,
        bn_eps=BN_EPS,
        bn_momentum=BN_MOMENTUM,
        dropout_in_head=dropout_in_head,
    )
    config = LMConfig.create(arch, VOCAB, emb_size=EMB, hidden_size=HIDDEN, n_layers=n_layers)
    head = ClassifierHead(
        labels=LABELS,
        head_sizes=[3 * EMB, 10, len(LABELS)],
        head_dropouts=[0.2, 0.1],
        bptt=BPTT,
        max_len=MAX_LEN,
        bn_eps=BN_EPS,
        bn_momentum=BN_MOMENTUM,
    )
    pth = directory / "cls.pth"
    save_pth({"model": state}, pth)
    write_classifier_sidecar(directory / "cls.json", config.to_dict(), head)
    return pth


def read_state(pth: Path):
    return read_classifier_state(
        load_pth(pth), read_classifier_head(pth.with_suffix(".json")), str(pth), read_sidecar(pth)
    )


@pytest.fixture(scope="module", params=["awd-lstm", "qrnn"])
def converted(request, tmp_path_factory, spm_model):
    """(pth, task dir, summary) of one converted classifier per architecture."""
    work = tmp_path_factory.mktemp(f"cls_{request.param}")
    n_layers = 3 if request.param == "qrnn" else 2
    pth = write_classifier(work, request.param, n_layers=n_layers)
    out = work / "task"
    summary = convert(ConvertConfig(pretrained_model=pth, spm_model_file=spm_model, out_path=out))
    return pth, out, summary


def long_texts(seed: int) -> list[np.ndarray]:
    """Fresh texts: short, one chunk, several chunks, just over max_len, three max_len."""
    rng = np.random.default_rng(seed)
    rows = []
    for length in (4, BPTT + 3, 3 * BPTT + 1, MAX_LEN + 5, 3 * MAX_LEN + 2):
        ids = rng.integers(4, VOCAB, size=length).astype(np.int32)
        ids[0], ids[-1] = 2, 3
        rows.append(ids)
    return rows


def test_conversion_matches_fastai_on_long_and_short_texts(converted):
    pth, out, summary = converted
    assert sorted(os.listdir(out)) == ["model.keras", "spm.model", "task.json"]
    task = read_task(out, "classifier")
    assert (task["labels"], task["keep"], task["bptt"], task["max_len"]) == (
        LABELS,
        "last",
        BPTT,
        MAX_LEN,
    )
    assert task["max_seq_len"] == 4 * MAX_LEN and task["conversion"]["verified"]
    for name in ("keras", "reloaded"):
        report = summary.reports[name]
        assert report.max_abs_diff <= 1e-5
        assert report.tokens > 2 * MAX_LEN  # the parity texts went beyond max_len
    # Independently of the converter's own check: fresh texts, the reloaded model, one batch.
    rows = long_texts(seed=11)
    reference = ReferenceClassifier(read_state(pth)).outputs(rows)
    probs = reference["probabilities"]
    assert probs.max() < 0.99 and probs.min() > 0.01  # not saturated: a diff would show
    report = _parity(load_task_model(out, task), reference, rows, "fresh texts")
    assert report.max_abs_diff <= 1e-5, report.format_table()


def test_keep_first_differs_from_fastai_beyond_max_len(converted):
    """The window is what makes long texts agree: pooling over the whole text does not."""
    pth, _, _ = converted
    state = read_state(pth)
    rows = long_texts(seed=5)
    reference = ReferenceClassifier(state).outputs(rows)
    first = _build_keras(state, "first")
    short = [i for i, row in enumerate(rows) if len(row) <= MAX_LEN]
    short_ref = {name: value[short] for name, value in reference.items()}
    assert _parity(first, short_ref, [rows[i] for i in short], "short").max_abs_diff <= 1e-5
    long = [i for i, row in enumerate(rows) if len(row) > MAX_LEN]
    long_ref = {name: value[long] for name, value in reference.items()}
    assert _parity(first, long_ref, [rows[i] for i in long], "long").max_abs_diff > 1e-3


def test_batch_norm_settings_are_carried(converted):
    pth, out, _ = converted
    model = load_task_model(out, read_task(out, "classifier"))
    for name in ("head_batch_norm_0", "head_batch_norm_1"):
        layer = model.get_layer(name)
        assert layer.epsilon == pytest.approx(BN_EPS)
        assert layer.momentum == pytest.approx(1 - BN_MOMENTUM)  # Keras' convention
    # eps: the running variances are small, so the wrong eps changes the predictions.
    state = read_state(pth)
    rows = parity_texts(VOCAB, lambda texts: [[5, 6]] * len(texts), BPTT, MAX_LEN)
    reference = ReferenceClassifier(state).outputs(rows)
    wrong = dataclasses.replace(state, head=dataclasses.replace(state.head, bn_eps=1e-5))
    assert _parity(_build_keras(wrong, "last"), reference, rows, "eps").max_abs_diff > 1e-4
    # momentum: one training step moves Keras' moving mean as PyTorch's running mean moves.
    layer = model.get_layer("head_batch_norm_0")
    features = np.random.default_rng(0).normal(size=(6, 3 * EMB)).astype(np.float32)
    torch_bn = torch.nn.BatchNorm1d(3 * EMB, eps=BN_EPS, momentum=BN_MOMENTUM)
    torch_bn.running_mean.copy_(torch.from_numpy(np.asarray(layer.moving_mean)))
    torch_bn.running_var.copy_(torch.from_numpy(np.asarray(layer.moving_variance)))
    torch_bn.train()(torch.from_numpy(features))
    layer(features, training=True)
    np.testing.assert_allclose(layer.moving_mean, torch_bn.running_mean.numpy(), atol=1e-6)
    # (Keras' moving variance is the biased batch variance, PyTorch's the unbiased one.)


def test_task_dir_round_trips_through_interactive_reload_and_export(converted, tmp_path):
    _, out, _ = converted
    texts = ["a clever blend of fact and fiction .", "the pacing is somber " * 20]
    predictor = TextClassifierPredictor(out)
    probs, _, ids = predictor.predict(texts)
    assert ids.shape[1] > MAX_LEN  # the long text is pooled over fastai's window
    model = load_task_model(out, read_task(out, "classifier"))
    np.testing.assert_allclose(probs, keras.ops.convert_to_numpy(model(ids)), atol=1e-6)
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "10_train_classifier.py"), "--interactive-from",
         str(out)],
        input="\n".join(texts) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, row in zip(lines, probs, strict=True):
        shown = dict(item.split("=") for item in line.split())
        assert sorted(shown) == sorted(LABELS)  # best first
        np.testing.assert_allclose([float(shown[label]) for label in LABELS], row, atol=1e-4)
    from task_export.pipeline import export_task

    result = export_task(out, tmp_path / "export", formats=("saved_model", "onnx"))
    artifacts = result.report["artifacts"]
    assert sorted(artifacts) == ["onnx", "saved_model"]
    assert all(entry["parity"]["max_abs_diff"] <= 1e-5 for entry in artifacts.values())


def test_classifier_without_head_dropout_modules(tmp_path, spm_model):
    """ps of 0: fastai leaves the Dropout out, the Linear moves to index 1."""
    pth = write_classifier(tmp_path, "awd-lstm", dropout_in_head=False)
    assert "1.layers.0.1.weight" in load_pth(pth)["model"]
    summary = convert(
        ConvertConfig(pretrained_model=pth, spm_model_file=spm_model, out_path=tmp_path / "t")
    )
    assert summary.reports["keras"].max_abs_diff <= 1e-5


def _convert_fails(pth: Path, spm: Path, out: Path, **flags) -> str:
    with pytest.raises(InputError) as err:
        convert(ConvertConfig(pretrained_model=pth, spm_model_file=spm, out_path=out, **flags))
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return str(err.value)


def test_bad_classifier_inputs(tmp_path, spm_model):
    pth = write_classifier(tmp_path / "ok", "awd-lstm")
    out = tmp_path / "out"
    sidecar = json.loads(pth.with_suffix(".json").read_text())
    # An LM sidecar (no "classifier" object): the labels are unknown.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "cls.pth").write_bytes(pth.read_bytes())
    lm_only = {k: v for k, v in sidecar.items() if k != CLASSIFIER_KEY}
    (bare / "cls.json").write_text(json.dumps(lm_only))
    assert "has no 'classifier' object" in _convert_fails(bare / "cls.pth", spm_model, out)
    # A head that does not fit the sidecar.
    misfit = {**sidecar[CLASSIFIER_KEY], "head_sizes": [48, 12, 3]}
    (bare / "cls.json").write_text(json.dumps({**sidecar, CLASSIFIER_KEY: misfit}))
    assert "do not fit the sidecar's head_sizes" in _convert_fails(bare / "cls.pth", spm_model, out)
    # An SPM model with another vocabulary.
    texts = [line.split("\t")[0] for line in SENT.read_text(encoding="utf-8").splitlines()[1:]]
    other = train_spm(texts, tmp_path / "other", vocab_size=VOCAB - 20)
    assert "differs from the embedding" in _convert_fails(pth, other, out)
    # Flags that contradict the file, or do not apply.
    assert "--qrnn was given" in _convert_fails(pth, spm_model, out, qrnn=True)
    assert "--fixed-seq-len is for language models" in _convert_fails(
        pth, spm_model, out, fixed_seq_len=40
    )
    assert "below the classifier's max_len" in _convert_fails(pth, spm_model, out, max_seq_len=10)


def test_keep_is_refused_for_language_models(tmp_path, spm_model):
    from convert.testing import fastai_lm_state_dict

    lm = tmp_path / "lm.pth"
    save_pth({"model": fastai_lm_state_dict("awd-lstm", VOCAB, EMB, HIDDEN, 2)}, lm)
    message = _convert_fails(lm, spm_model, tmp_path / "out", keep="last")
    assert "--keep and --max-seq-len are for classifiers" in message


def test_wrong_parity_fails_hard(converted, tmp_path, spm_model, monkeypatch):
    """A converter bug (here: BatchNorm eps ignored) is a ParityError and leaves nothing."""
    pth, _, _ = converted
    import convert.classifier_convert as cc

    real = cc._build_keras

    def broken(state, keep):
        return real(
            dataclasses.replace(state, head=dataclasses.replace(state.head, bn_eps=1e-5)), keep
        )

    monkeypatch.setattr(cc, "_build_keras", broken)
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="parity check failed"):
        convert(ConvertConfig(pretrained_model=pth, spm_model_file=spm_model, out_path=out))
    assert not out.exists()
