"""Stage 08: tiny fastai text classifiers (AWD-LSTM, QRNN) fine-tuned from a stage-04 LM, on CPU.

Covers training, the outputs' formats (fastai's own keys, the sidecar, the history), gradual
unfreezing, chunked batches, resume and --save-best, bad input, the CLI, and the torch-only
state-dict helper the converter's tests use.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fastai.callback.core import Callback
from fastai.text.data import pad_input_chunk
from fastai.text.models import core as fastai_core
from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config
from fastai.torch_core import get_model

from convert.classifier_testing import fastai_classifier_state_dict
from lm_training.callbacks import TrainingDiverged
from lm_training.checkpoint import CHECKPOINT_FILE
from lm_training.classifier_config import ClassifierTrainConfig, plan_classifier_phases
from lm_training.classifier_data import pad_chunks
from lm_training.classifier_model import CLASSIFIER_DROPOUTS, build_text_classifier
from lm_training.classifier_train import train_text_classifier
from lm_training.config import output_paths
from lm_training.history import CLASSIFIER_HISTORY_COLUMNS
from lm_training.models import AWD_QRNN, build_language_model
from pretraining_utils.spm import SpmConfig, build_spm
from tests.helpers import load_script
from ulmfit_core.artifacts import sha256_file
from ulmfit_core.classifier_config import read_classifier_head
from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import DROPOUT_NAMES, LMConfig
from ulmfit_torch.checkpoint_io import load_pth, save_pth

ARCHS = ["awd-lstm", "qrnn"]
VOCAB, EMB, HIDDEN, LAYERS = 300, 16, 32, 2
TINY = dict(batch_size=16, bptt=8, max_len=32, device="cpu", seed=3, gold_column="label")
TINY_FLAGS = ["--batch-size", "16", "--bptt", "8", "--max-len", "32", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("restore_process_state")  # the CLI's logging setup


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data) -> dict[str, Path]:
    """A 300-piece SPM model of SST-2 sentences, 240 labelled examples, a label map."""
    out = tmp_path_factory.mktemp("cls_inputs")
    lines = (shared_data / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    (out / "raw.txt").write_text("\n".join(r.split("\t")[1] for r in rows[:4000]) + "\n")
    spm = build_spm(
        SpmConfig(corpus_path=out / "raw.txt", vocab_size=VOCAB, model_prefix=out / "spm")
    )
    (out / "train.tsv").write_text("\n".join([header, *rows[4000:4240]]) + "\n")
    return {
        "spm": spm.model_path,
        "train": out / "train.tsv",
        "labels": shared_data / "sst2_labels.txt",
        "dir": out,
    }


def write_lm(directory: Path, arch: str, vocab: int = VOCAB, sha: str | None = None) -> Path:
    """A random stage-04 language model ``lm.pth`` with its ``lm.json`` sidecar."""
    directory.mkdir(parents=True, exist_ok=True)
    config = LMConfig.create(
        arch, vocab, emb_size=EMB, hidden_size=HIDDEN, n_layers=LAYERS, spm_model_sha256=sha
    )
    torch.manual_seed(0)
    save_pth({"model": build_language_model(config).state_dict()}, directory / "lm.pth")
    config.save(directory / "lm.json")
    return directory / "lm.pth"


@pytest.fixture(scope="module", params=ARCHS)
def lm(request, inputs) -> tuple[str, Path]:
    directory = inputs["dir"] / f"lm-{request.param}"
    return request.param, write_lm(directory, request.param, sha=sha256_file(inputs["spm"]))


def config(inputs, lm_path: Path, save_path: Path, exp_name: str = "cls", **changes):
    return ClassifierTrainConfig(
        train_tsv=inputs["train"],
        label_map=inputs["labels"],
        spm_model=inputs["spm"],
        pretrained_model=lm_path,
        save_path=save_path,
        exp_name=exp_name,
        **{**TINY, **changes},
    )


@pytest.fixture(scope="module")
def trained(lm, inputs, tmp_path_factory):
    arch, lm_path = lm
    out = tmp_path_factory.mktemp(f"cls_{arch}")
    summary = train_text_classifier(config(inputs, lm_path, out, num_epochs=4))
    return arch, summary


def fastai_text_classifier(arch: str, monkeypatch, drop_mult: float = 0.5, **kwargs):
    """fastai's own ``get_text_classifier``; for AWD_QRNN registered as fastai 2.2.7 had it."""
    encoder_cls = AWD_QRNN if arch == "qrnn" else AWD_LSTM
    if arch == "qrnn":
        meta = {"hid_name": "emb_sz", "config_clas": awd_lstm_clas_config}
        monkeypatch.setitem(fastai_core._model_meta, AWD_QRNN, meta)
    return fastai_core.get_text_classifier(
        encoder_cls,
        VOCAB,
        2,
        config=dict(emb_sz=EMB, n_hid=HIDDEN, n_layers=LAYERS),
        drop_mult=drop_mult,
        **kwargs,
    )


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


class InterruptAfterEpochs(Callback):
    """Simulate Ctrl-C once ``n`` epochs (and so their checkpoints) are done."""

    order = 100

    def __init__(self, n: int) -> None:
        self.n, self.done = n, 0

    def after_epoch(self) -> None:
        self.done += 1
        if self.done == self.n:
            raise KeyboardInterrupt("simulated interruption")


class RecordWeights(Callback):
    """A copy of the weights after every epoch, by (1-based) epoch of the run."""

    order = 100

    def __init__(self) -> None:
        self.epochs: list[dict[str, torch.Tensor]] = []

    def after_epoch(self) -> None:
        state = get_model(self.learn.model).state_dict()
        self.epochs.append({k: v.detach().clone() for k, v in state.items()})


class InjectNaN(Callback):
    """Make the training loss NaN at one batch of one epoch of a fit (0-based)."""

    order = 1.5  # after AR/TAR were added, before the guard looks

    def __init__(self, epoch: int, batch: int) -> None:
        self.at, self.fits = (epoch, batch), 0

    def before_fit(self) -> None:
        self.fits += 1

    def after_loss(self) -> None:
        if self.training and (self.fits - 1, self.iter) == self.at:
            self.learn.loss_grad = self.learn.loss_grad * math.nan


class ForceAccuracy(Callback):
    """Overwrite the recorded validation accuracy of some epochs (1-based, of the run), so that
    the best epoch is known in advance."""

    order = 70  # after Recorder stored the epoch's values, before the bookkeeping reads them

    def __init__(self, accuracies: dict[int, float]) -> None:
        self.accuracies, self.count = accuracies, 0

    def after_epoch(self) -> None:
        self.count += 1
        if self.count in self.accuracies:
            recorder = self.learn.recorder
            index = recorder.metric_names[1:-1].index("accuracy")
            recorder.values[-1][index] = self.accuracies[self.count]


# ---------------------------------------------------------------------------------------------
# Training and outputs
# ---------------------------------------------------------------------------------------------


def test_the_classifier_trains_and_its_training_loss_falls(trained):
    _, summary = trained
    losses = [row["train_loss"] for row in summary.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert [row["phase"] for row in summary.history] == [
        "frozen-1",
        "frozen-2",
        "frozen-3",
        "unfrozen",
    ]
    assert summary.n_train == 216 and summary.n_valid == 24  # 10 % held out
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in summary.history)


def test_outputs_have_fastai_keys_and_describe_the_classifier(trained, monkeypatch):
    arch, summary = trained
    paths = summary.paths
    state = torch.load(paths.model, weights_only=True)
    assert set(state) == {"model", "opt"} and state["opt"]["state"]
    reference = fastai_text_classifier(arch, monkeypatch).state_dict()
    assert list(state["model"]) == list(reference)
    assert shapes(state["model"]) == shapes(reference)
    assert "1.layers.0.2.weight" in state["model"] and "1.layers.0.2.bias" not in state["model"]

    lm_config = LMConfig.load(paths.config)
    assert (lm_config.arch, lm_config.vocab_size, lm_config.emb_size) == (arch, VOCAB, EMB)
    assert (lm_config.hidden_size, lm_config.n_layers, lm_config.drop_mult) == (HIDDEN, 2, 0.5)
    assert lm_config.dropouts == pytest.approx(
        {name: CLASSIFIER_DROPOUTS[name] * 0.5 for name in DROPOUT_NAMES}
    )
    head = read_classifier_head(paths.config)
    assert head.labels == ["0", "1"] and head.head_sizes == [3 * EMB, 50, 2]
    assert head.head_dropouts == pytest.approx([0.4 * 0.5, 0.1])
    assert (head.bptt, head.max_len, head.bn_eps, head.bn_momentum) == (8, 32, 1e-5, 0.1)
    assert lm_config.spm_model_sha256 == summary.lm_config.spm_model_sha256 is not None

    with paths.history.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and tuple(rows[0]) == CLASSIFIER_HISTORY_COLUMNS
    assert float(rows[-1]["accuracy"]) == pytest.approx(summary.history[-1]["accuracy"])
    assert sorted(os.listdir(paths.model.parent)) == ["cls.history.csv", "cls.json", "cls.pth"]


def test_reloaded_classifier_gives_the_same_outputs(trained):
    _, summary = trained
    model = build_text_classifier(summary.lm_config, 2, bptt=8, max_len=32).eval()
    model.load_state_dict(load_pth(summary.paths.model)["model"])
    batch = torch.randint(4, VOCAB, (3, 20))
    with torch.no_grad():
        first, second = model(batch)[0], model(batch)[0]
    assert first.shape == (3, 2) and torch.equal(first, second)


def test_gradual_unfreezing_trains_one_more_layer_group_per_phase(lm, inputs, tmp_path):
    """With lr 0 nothing would move; here each phase must change exactly its trained groups."""
    _, lm_path = lm
    record = RecordWeights()
    train_text_classifier(config(inputs, lm_path, tmp_path, num_epochs=3), callbacks=[record])
    start = {k: v for k, v in load_pth(lm_path)["model"].items() if k.startswith("0.")}
    before = {f"0.module.{k[2:]}": v for k, v in start.items()}
    epoch1, epoch2, epoch3 = record.epochs
    last_rnn, first_rnn = f"0.module.rnns.{LAYERS - 1}.", "0.module.rnns.0."

    def changed(old: dict, new: dict, prefix: str) -> bool:
        keys = [k for k in new if k.startswith(prefix) and k in old]
        assert keys
        return any(not torch.equal(old[k], new[k]) for k in keys)

    assert not changed(before, epoch1, last_rnn) and not changed(before, epoch1, "0.module.enc")
    assert changed(epoch1, epoch2, last_rnn) and not changed(epoch1, epoch2, first_rnn)
    assert changed(epoch2, epoch3, first_rnn) and not changed(epoch2, epoch3, "0.module.enc")


def test_plan_follows_the_ulmfit_tutorial():
    plan = plan_classifier_phases(5, 2e-2)
    assert [(p.name, p.epochs, p.frozen, p.trainable_groups) for p in plan] == [
        ("frozen-1", 1, True, 1),
        ("frozen-2", 1, True, 2),
        ("frozen-3", 1, True, 3),
        ("unfrozen", 2, False, 1),
    ]
    assert [p.lr for p in plan] == pytest.approx([2e-2, 1e-2, 5e-3, 1e-3])
    assert plan[0].lr_max == 2e-2
    assert plan[1].lr_max == slice(pytest.approx(1e-2 / 2.6**4), 1e-2)
    assert [p.name for p in plan_classifier_phases(2, 1e-2)] == ["frozen-1", "frozen-2"]


# ---------------------------------------------------------------------------------------------
# Chunked batches
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_batch_outputs_equal_each_text_alone(arch):
    """Texts of different lengths, up to 3 chunks (> 2 * bptt): real_bs changes between chunks,
    so the encoder's hidden states (and the QRNN's saved last input) change batch size."""
    torch.manual_seed(0)
    bptt = 5
    cfg = LMConfig.create(arch, 50, emb_size=8, hidden_size=12, n_layers=2)
    model = build_text_classifier(cfg, 3, bptt=bptt, max_len=15).eval()
    rng = np.random.default_rng(0)
    texts = [torch.from_numpy(rng.integers(4, 50, size=n)) for n in (23, 22, 18, 13, 6, 4, 2)]
    samples = [(text, torch.tensor(0)) for text in texts]
    with torch.no_grad():
        alone = torch.cat([model(pad_chunks([s], seq_len=bptt)[0][0][None])[0] for s in samples])
        batch = torch.stack([s[0] for s in pad_chunks(samples, seq_len=bptt)])
        starts = (batch != 1).int().argmax(dim=1)  # each text starts on a chunk boundary
        assert batch.shape == (7, 25) and starts.tolist() == [0, 0, 5, 10, 15, 20, 20]
        torch.testing.assert_close(model(batch)[0], alone, rtol=1e-5, atol=1e-6)
        # fastai's own padding (to the longest text) runs too, batch sizes changing as well.
        fastai_batch = torch.stack(
            [s[0] for s in pad_input_chunk(samples, pad_idx=1, pad_first=True, seq_len=bptt)]
        )
        assert fastai_batch.shape == (7, 23) and model(fastai_batch)[0].isfinite().all()


# ---------------------------------------------------------------------------------------------
# Resume and --save-best
# ---------------------------------------------------------------------------------------------


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def test_save_best_and_resume_after_interruption(lm, inputs, tmp_path):
    """Epoch 2 is made the best; a run interrupted mid-phase (after epoch 4 of 5) resumes to
    the uninterrupted run's history, final weights and best weights."""
    _, lm_path = lm
    best = {2: 0.99}
    record = RecordWeights()
    full = train_text_classifier(
        config(inputs, lm_path, tmp_path / "full", num_epochs=5, save_best=True),
        callbacks=[ForceAccuracy(best), record],
    )
    assert full.best_epoch == full.saved_epoch == 2 and full.history[1]["accuracy"] == 0.99
    full_state = load_pth(full.paths.model)["model"]
    assert all(torch.equal(full_state[k], v) for k, v in record.epochs[1].items())
    assert any(not torch.equal(full_state[k], v) for k, v in record.epochs[-1].items())

    cfg = config(inputs, lm_path, tmp_path / "cut", num_epochs=5, save_best=True)
    with pytest.raises(KeyboardInterrupt):
        train_text_classifier(cfg, callbacks=[ForceAccuracy(best), InterruptAfterEpochs(4)])
    paths = output_paths(cfg.save_path, cfg.exp_name)
    checkpoint = torch.load(paths.checkpoint_dir / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["progress"]["epochs_done"] == 4 and checkpoint["best"]["epoch"] == 2
    assert not paths.model.exists() and not paths.config.exists()

    with pytest.raises(InputError, match="batch_size: 16 -> 8"):
        train_text_classifier(dataclasses.replace(cfg, batch_size=8, resume=True))

    resumed_record = RecordWeights()
    resumed = train_text_classifier(
        dataclasses.replace(cfg, resume=True),
        callbacks=[resumed_record],  # epoch 5's accuracy is its own
    )
    assert resumed.resumed_after_epoch == 4 and resumed.saved_epoch == 2
    assert without_time(resumed.history) == without_time(full.history)
    last = resumed_record.epochs[-1]
    assert all(torch.equal(last[k], v) for k, v in record.epochs[-1].items())
    resumed_state = load_pth(paths.model)["model"]
    assert all(torch.equal(resumed_state[k], v) for k, v in full_state.items())
    assert not paths.checkpoint_dir.exists()


def test_resume_when_only_the_outputs_are_missing(inputs, tmp_path):
    lm_path = write_lm(tmp_path / "lm", "awd-lstm")
    cfg = config(inputs, lm_path, tmp_path / "out", num_epochs=1)
    with pytest.raises(KeyboardInterrupt):  # after the last checkpoint, before the outputs
        train_text_classifier(cfg, callbacks=[InterruptAfterEpochs(1)])
    record = RecordWeights()
    summary = train_text_classifier(dataclasses.replace(cfg, resume=True), callbacks=[record])
    assert record.epochs == [] and summary.resumed_after_epoch == 1 and summary.epochs == 1
    state = load_pth(summary.paths.model)
    assert set(state) == {"model", "opt"} and state["opt"]["state"]


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(lm, inputs, tmp_path):
    _, lm_path = lm
    cfg = config(inputs, lm_path, tmp_path, num_epochs=3)
    # Every phase is one fit of one epoch: the second fit is epoch 2.
    with pytest.raises(TrainingDiverged, match="training loss became nan at epoch 2, batch 3"):
        train_text_classifier(cfg, callbacks=[InjectNaN(epoch=1, batch=2)])
    paths = output_paths(cfg.save_path, cfg.exp_name)
    assert not paths.model.exists() and not paths.config.exists()
    assert load_pth(paths.checkpoint_dir / CHECKPOINT_FILE)["progress"]["epochs_done"] == 1


# ---------------------------------------------------------------------------------------------
# Bad input and the CLI
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    return load_script("08_train_classifier").main


def cli_args(inputs, lm_path: Path, save_path: Path, *extra: str) -> list[str]:
    return [
        "--train-tsv",
        str(inputs["train"]),
        "--label-map",
        str(inputs["labels"]),
        "--spm-model-file",
        str(inputs["spm"]),
        "--pretrained-model",
        str(lm_path),
        "--save-path",
        str(save_path),
        "--exp-name",
        "cls",
        *TINY_FLAGS,
        *extra,
    ]


def test_bad_input_exits_with_a_message_and_writes_nothing(cli, inputs, tmp_path):
    lm_path = write_lm(tmp_path / "lm", "awd-lstm")
    out = tmp_path / "out"
    (tmp_path / "labels.txt").write_text("neg\npos\n")
    other_vocab = write_lm(tmp_path / "lm301", "awd-lstm", vocab=VOCAB + 1)
    other_spm = write_lm(tmp_path / "lm-sha", "awd-lstm", sha="0" * 64)
    cases = {
        "missing column(s) target; columns found: label, sentence": [],
        "labels not in the label map: 0, 1 (label map: neg, pos)": [
            "--gold-column-name",
            "label",
            "--label-map",
            str(tmp_path / "labels.txt"),
        ],
    }
    for message, extra in cases.items():
        result = CliRunner().invoke(cli, cli_args(inputs, lm_path, out, *extra))
        assert result.exit_code == 1, result.output
        assert message in result.output
    for bad_lm, message in (
        (other_vocab, f"has a vocabulary of {VOCAB + 1} pieces, but the SentencePiece model"),
        (other_spm, "was trained with SPM model sha256 0000"),
    ):
        result = CliRunner().invoke(
            cli, cli_args(inputs, bad_lm, out, "--gold-column-name", "label")
        )
        assert result.exit_code == 1 and message in result.output, result.output
    assert not out.exists()


def test_cli_trains_and_logs_a_summary(cli, inputs, tmp_path, shared_data):
    lm_path = write_lm(tmp_path / "lm", "qrnn")
    dev = (shared_data / "sst2_dev.tsv").read_text(encoding="utf-8").splitlines()[:31]
    (tmp_path / "dev.tsv").write_text("\n".join(dev) + "\n")
    args = cli_args(inputs, lm_path, tmp_path / "out", "--gold-column-name", "label")
    result = CliRunner().invoke(
        cli, [*args, "--test-tsv", str(tmp_path / "dev.tsv"), "--num-epochs", "1", "--save-best"]
    )
    assert result.exit_code == 0, result.output
    assert "trained 1 epoch(s) on 240 examples (30 for validation)" in result.output
    assert "valid accuracy" in result.output and "(epoch 1, the best)" in result.output
    assert sorted(os.listdir(tmp_path / "out")) == ["cls.history.csv", "cls.json", "cls.pth"]


def test_cli_help_explains_every_option(cli):
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for flag in (
        "--train-tsv",
        "--test-tsv",
        "--data-column-name",
        "--gold-column-name",
        "--label-map",
        "--spm-model-file",
        "--pretrained-model",
        "--save-path",
        "--exp-name",
        "--num-epochs",
        "--lr",
        "--batch-size",
        "--drop-mult",
        "--bptt",
        "--max-len",
        "--seed",
        "--save-best",
        "--resume",
        "--device",
        "--fp16",
        "--bf16",
        "--verbose",
    ):
        assert flag in result.output
    assert all(option.help for option in cli.params if option.name != "help")


def test_config_validation(inputs, tmp_path):
    lm_path = write_lm(tmp_path / "lm", "awd-lstm")
    for changes, message in (
        (dict(max_len=4), "max_len \\(4\\) must be at least bptt \\(8\\)"),
        (dict(lr=0.0), "lr must be positive"),
        (dict(exp_name="a/b"), "plain file name"),
        (dict(test_tsv=tmp_path / "none.tsv"), "test_tsv: file not found"),
        (dict(precision="fp8"), "unknown precision"),
        (dict(batch_size=500), "fewer than one batch of 500"),
    ):
        with pytest.raises(InputError, match=message):
            train_text_classifier(config(inputs, lm_path, tmp_path / "out", **changes))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# The torch-only helper for the converter's tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "drop_mult", "ps"),
    [("awd-lstm", 0.5, None), ("awd-lstm", 0.0, [0.0]), ("qrnn", 1, None)],
)
def test_torch_only_classifier_state_dict_has_fastai_keys_and_shapes(
    arch, drop_mult, ps, monkeypatch
):
    reference = fastai_text_classifier(
        arch, monkeypatch, drop_mult=drop_mult, ps=ps, lin_ftrs=[10]
    ).state_dict()
    state = fastai_classifier_state_dict(
        arch, VOCAB, EMB, HIDDEN, LAYERS, 2, lin_ftrs=(10,), dropout_in_head=ps is None
    )
    assert list(state) == list(reference) and shapes(state) == shapes(reference)
    assert state["1.layers.0.0.running_var"].min() > 0
    assert not torch.allclose(state["1.layers.0.0.running_var"], torch.ones(3 * EMB))
    assert state["1.layers.1.0.num_batches_tracked"].dtype == torch.int64
    model = build_text_classifier(
        LMConfig.create(
            arch, VOCAB, emb_size=EMB, hidden_size=HIDDEN, n_layers=LAYERS, drop_mult=drop_mult
        ),
        2,
        bptt=8,
        max_len=32,
        lin_ftrs=[10],
    )
    if ps is None:
        model.load_state_dict(state)  # our builder takes it as it is
