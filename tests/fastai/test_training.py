"""Stage 04: tiny AWD-LSTM / AWD-QRNN language models trained on real text, on CPU.

Covers the config sidecar, the models' state-dict layout, training, outputs, safe loading,
resume, fine-tuning, the NaN guard and the CLI.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from fastai.callback.core import Callback
from fastai.learner import Learner, load_model, save_model
from fastai.losses import CrossEntropyLossFlat
from fastai.optimizer import Adam
from fastai.torch_core import get_model
from fastcore.foundation import L

from lm_training.callbacks import TrainingDiverged
from lm_training.checkpoint import CHECKPOINT_FILE
from lm_training.config import TrainConfig, output_paths, plan_phases
from lm_training.models import AWD_QRNN, build_language_model, language_model_split
from lm_training.pretrained import infer_lm_config
from lm_training.train import train_language_model
from pretraining_utils.corpus import BinaryCorpus
from pretraining_utils.demo_corpus import write_demo_corpus
from pretraining_utils.encode import EncodeConfig, encode_corpus
from pretraining_utils.lm_data import HoldOut, LMStreamBatches
from pretraining_utils.spm import SpmConfig, build_spm
from tests.helpers import REPO_ROOT, load_script
from tests.torch_models import awd_qrnn_lm_state_dict_shapes
from ulmfit_core.errors import InputError
from ulmfit_core.lm_config import LMConfig, qrnn_windows, sidecar_path
from ulmfit_torch.checkpoint_io import load_pth, plain_state, save_pth

ARCHS = ["awd-lstm", "qrnn"]
TINY = dict(emb_size=32, hidden_size=64, n_layers=2, batch_size=16, bptt=20, device="cpu", seed=1)
TINY_FLAGS = [
    "--emb-size",
    "32",
    "--hidden-size",
    "64",
    "--num-hidden-layers",
    "2",
    "--batch-size",
    "16",
    "--max-seq-len",
    "20",
    "--device",
    "cpu",
    "--seed",
    "1",
]


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory) -> dict[str, Path]:
    """~150 KB of English prose, a 300-piece SPM model, its binary corpus and text ids."""
    out = tmp_path_factory.mktemp("text")
    write_demo_corpus(out / "raw.txt", max_bytes=150_000)
    spm = build_spm(
        SpmConfig(
            corpus_path=out / "raw.txt", vocab_size=300, model_prefix=out / "spm", num_threads=1
        )
    )
    for fmt, target in (("bin", out / "corpus"), ("id", out / "ids.txt")):
        encode_corpus(
            EncodeConfig(
                corpus_path=out / "raw.txt",
                model_path=spm.model_path,
                save_path=target,
                output_format=fmt,
                workers=1,
            )
        )
    return {"bin": out / "corpus", "ids": out / "ids.txt", "spm": spm.model_path}


def tiny_config(corpus: Path, save_path: Path, exp_name: str, **changes) -> TrainConfig:
    return TrainConfig(
        train_path=corpus, save_path=save_path, exp_name=exp_name, **{**TINY, **changes}
    )


class CaptureModel(Callback):
    """Keep the trained model (the unwrapped one), its Learner and a copy of its optimizer state
    (fastai's in-memory form: ``L`` and numpy scalars) when fitting ends."""

    def after_fit(self) -> None:
        self.final_model = get_model(self.learn.model)
        self.fitted = self.learn
        self.opt_state = copy.deepcopy(self.learn.opt.state_dict())


class RecordWeights(Callback):
    """A copy of the weights after every epoch."""

    order = 100

    def __init__(self) -> None:
        self.epochs: list[dict[str, torch.Tensor]] = []

    def after_epoch(self) -> None:
        state = get_model(self.learn.model).state_dict()
        self.epochs.append({k: v.detach().clone() for k, v in state.items()})


class InterruptAfterEpochs(Callback):
    """Simulate Ctrl-C once ``n`` epochs (and so their checkpoints) are done."""

    order = 100  # after the checkpoint of the epoch was written

    def __init__(self, n: int) -> None:
        self.n, self.done = n, 0

    def after_epoch(self) -> None:
        self.done += 1
        if self.done == self.n:
            raise KeyboardInterrupt("simulated interruption")


class InjectNaN(Callback):
    """Make the training loss NaN at one batch of one epoch (0-based)."""

    order = 1.5  # after AR/TAR were added, before the guard looks

    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def after_loss(self) -> None:
        if self.training and (self.epoch, self.iter) == self.at:
            self.learn.loss_grad = self.learn.loss_grad * math.nan


def validation_loss(model: torch.nn.Module, corpus: Path) -> float:
    """fastai's valid_loss, computed by hand: the mean over batches of the mean token loss."""
    data = BinaryCorpus.open(corpus)
    batches = LMStreamBatches(
        data.tokens, data.offsets, TINY["batch_size"], TINY["bptt"], holdout=HoldOut(0.05)
    )
    model.eval()
    model.reset()
    losses = []
    with torch.no_grad():
        for x, y in batches:
            logits = model(torch.from_numpy(x))[0]
            losses.append(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).reshape(-1)
                ).item()
            )
    return float(np.mean(losses))


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    model.reset()
    with torch.no_grad():
        first = model(x[:, :10])[0]
        second = model(x[:, 10:])[0]  # the hidden state (and QRNN prev_x) carries over
    return torch.cat([first, second], dim=1)


@pytest.fixture(scope="module")
def trained(text_corpus, tmp_path_factory) -> dict[str, dict]:
    """One epoch of each architecture, trained once for the module."""
    out = tmp_path_factory.mktemp("trained")
    runs = {}
    for arch in ARCHS:
        capture = CaptureModel()
        summary = train_language_model(
            tiny_config(text_corpus["bin"], out, f"tiny-{arch}", arch=arch), callbacks=[capture]
        )
        runs[arch] = {
            "summary": summary,
            "model": capture.final_model,
            "learn": capture.fitted,
            "opt_state": capture.opt_state,
            "paths": output_paths(out, f"tiny-{arch}"),
        }
    return runs


@pytest.fixture(scope="module")
def uninterrupted(text_corpus, tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of a 2-epoch AWD-LSTM run, the reference for the resume tests."""
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = train_language_model(tiny_config(text_corpus["bin"], out, "ref", num_epochs=2))
    return {"model": load_pth(summary.paths.model)["model"], "history": summary.history}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


# ---------------------------------------------------------------------------------------------
# The config sidecar
# ---------------------------------------------------------------------------------------------


def test_lm_config_defaults_follow_the_recipe():
    lstm = LMConfig.create("awd-lstm", 1000)
    assert (lstm.emb_size, lstm.hidden_size, lstm.n_layers, lstm.windows) == (400, 1152, 3, None)
    assert (lstm.input_p, lstm.weight_p, lstm.output_p, lstm.embed_p, lstm.hidden_p) == (
        0.6,
        0.5,
        0.4,
        0.1,
        0.2,
    )
    qrnn = LMConfig.create("qrnn", 1000, drop_mult=0.5)
    assert (qrnn.hidden_size, qrnn.n_layers, qrnn.windows) == (1552, 4, [2, 1, 1, 1])
    assert qrnn.dropouts == pytest.approx(
        {"input_p": 0.2, "weight_p": 0.05, "embed_p": 0.05, "hidden_p": 0.1, "output_p": 0.2}
    )
    assert qrnn.drop_mult == 0.5 and qrnn.tie_weights and qrnn.out_bias and not qrnn.bidir
    assert qrnn.pad_id == 1 and qrnn.special_ids == {"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3}
    explicit = LMConfig.create("qrnn", 10, dropouts={"input_p": 0.3}, drop_mult=0.5)
    assert explicit.input_p == pytest.approx(0.15)  # explicit values are scaled too, as in fastai
    assert qrnn.layer_sizes == [1552, 1552, 1552, 400]


def test_lm_config_round_trip_and_validation(tmp_path):
    cfg = LMConfig.create(
        "qrnn",
        300,
        emb_size=32,
        hidden_size=64,
        n_layers=3,
        spm_model_sha256="ab" * 32,
        versions={"torch": "x"},
    )
    cfg.save(tmp_path / "m.json")
    assert LMConfig.load(tmp_path / "m.json") == cfg
    data = json.loads((tmp_path / "m.json").read_text())
    assert list(data)[:2] == ["format", "version"] and data["windows"] == qrnn_windows(3)
    assert LMConfig.from_dict({**data, "added_later": 1}) == cfg  # unknown keys are ignored
    with pytest.raises(InputError, match="unknown architecture 'transformer'"):
        LMConfig.from_dict({**data, "arch": "transformer"})
    with pytest.raises(InputError, match=r"missing keys \['hidden_size', 'vocab_size'\]"):
        LMConfig.from_dict(
            {k: v for k, v in data.items() if k not in ("vocab_size", "hidden_size")}
        )
    with pytest.raises(InputError, match="not an 'ulmfit-lm-config' file"):
        LMConfig.from_dict({"arch": "qrnn"})
    with pytest.raises(InputError, match="version 2 is not supported"):
        LMConfig.from_dict({**data, "version": 2})
    with pytest.raises(InputError, match="windows"):
        LMConfig.from_dict({**data, "windows": [1, 1, 1]})
    with pytest.raises(InputError, match="input_p must be in"):
        LMConfig.from_dict({**data, "input_p": 1.5})
    with pytest.raises(InputError, match="not found"):
        LMConfig.load(tmp_path / "missing.json")
    assert sidecar_path(tmp_path / "EXP.pth") == tmp_path / "EXP.json"


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def test_qrnn_language_model_has_fastai_227_keys_and_shapes():
    for n_layers in (1, 3):
        cfg = LMConfig.create("qrnn", 10, emb_size=6, hidden_size=8, n_layers=n_layers)
        state = build_language_model(cfg).state_dict()
        expected = awd_qrnn_lm_state_dict_shapes(10, 6, 8, n_layers)
        assert [(k, tuple(v.shape)) for k, v in state.items()] == list(expected.items())


def test_lstm_language_model_has_fastai_28_keys():
    state = build_language_model(
        LMConfig.create("awd-lstm", 10, emb_size=6, hidden_size=8, n_layers=2)
    ).state_dict()
    per_layer = [
        "weight_hh_l0_raw",
        "module.weight_ih_l0",
        "module.bias_ih_l0",
        "module.bias_hh_l0",
    ]
    expected = [
        "0.encoder.weight",
        "0.encoder_dp.emb.weight",
        *[f"0.rnns.{layer}.{name}" for layer in range(2) for name in per_layer],
        "1.decoder.weight",
        "1.decoder.bias",
    ]
    assert list(state) == expected
    assert state["0.rnns.1.weight_hh_l0_raw"].shape == (24, 6)  # last layer: emb size


def test_qrnn_encoder_hidden_state_and_reset():
    model = build_language_model(LMConfig.create("qrnn", 50, emb_size=6, hidden_size=8, n_layers=2))
    encoder = model[0]
    assert isinstance(encoder, AWD_QRNN)
    assert [tuple(h.shape) for h in encoder.hidden] == [(1, 1, 8), (1, 1, 6)]
    x = torch.randint(0, 50, (4, 7))
    model.train()
    model(x)
    assert [tuple(h.shape) for h in encoder.hidden] == [(1, 4, 8), (1, 4, 6)]
    assert encoder.rnns[0].layers[0].prev_x is not None  # save_prev_x on the window-2 layer
    model(x[:2])  # fastai's shorter last batch, then back
    model(x)
    model.reset()
    assert encoder.rnns[0].layers[0].prev_x is None
    assert all(not h.any() for h in encoder.hidden)


def test_lstm_with_zero_weight_dropout_trains_and_resets():
    # fastai 2.8's own WeightDropout breaks here (a Parameter gets registered on the LSTM).
    model = build_language_model(
        LMConfig.create("awd-lstm", 20, emb_size=4, hidden_size=6, n_layers=2, drop_mult=0.0)
    )
    model.train()
    model(torch.randint(0, 20, (2, 5)))[0].sum().backward()
    model.reset()
    assert "0.rnns.0.module.weight_hh_l0" not in model.state_dict()


@pytest.mark.parametrize("arch", ARCHS)
def test_infer_config_from_weights_alone(arch):
    cfg = LMConfig.create(arch, 30, emb_size=6, hidden_size=8, n_layers=3)
    inferred = infer_lm_config(build_language_model(cfg).state_dict(), "x.pth")
    assert (
        inferred.arch,
        inferred.vocab_size,
        inferred.emb_size,
        inferred.hidden_size,
        inferred.n_layers,
    ) == (arch, 30, 6, 8, 3)
    with pytest.raises(InputError, match="not a fastai AWD-LSTM/AWD-QRNN"):
        infer_lm_config({"weight": torch.zeros(2)}, "x.pth")


# ---------------------------------------------------------------------------------------------
# Training and outputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_one_epoch_lowers_the_validation_loss(trained, text_corpus, arch):
    run = trained[arch]
    untrained = build_language_model(run["summary"].lm_config)
    before = validation_loss(untrained, text_corpus["bin"])
    after = validation_loss(run["model"], text_corpus["bin"])
    assert before == pytest.approx(math.log(300), abs=0.1)
    assert after < before - 0.5
    # The history's valid_loss is fastai's: the same number as computed by hand.
    final = run["summary"].history[-1]
    assert final["valid_loss"] == pytest.approx(after, abs=1e-4)
    assert final["perplexity"] == pytest.approx(math.exp(after), rel=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_outputs_are_written_and_describe_the_model(trained, text_corpus, arch):
    paths = trained[arch]["paths"]
    cfg = LMConfig.load(paths.config)
    meta = BinaryCorpus.open(text_corpus["bin"]).meta
    assert (cfg.arch, cfg.vocab_size, cfg.emb_size, cfg.hidden_size, cfg.n_layers) == (
        arch,
        300,
        32,
        64,
        2,
    )
    assert cfg.spm_model_sha256 == meta["spm_model_sha256"]
    assert cfg.windows == ([2, 1] if arch == "qrnn" else None)
    assert {"torch", "fastai"} <= set(cfg.versions)
    rows = paths.history.read_text().splitlines()
    assert rows[0] == "epoch,phase,train_loss,valid_loss,accuracy,perplexity,time"
    assert len(rows) == 2 and rows[1].startswith("1,pretrain,")
    assert not paths.checkpoint_dir.exists()  # dropped once the outputs are written
    assert not [p for p in paths.model.parent.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("arch", ARCHS)
def test_reloaded_pth_gives_identical_outputs(trained, arch):
    run = trained[arch]
    state = load_pth(run["paths"].model)
    assert set(state) == {"model", "opt"}  # fastai's Learner.save format
    fresh = build_language_model(LMConfig.load(run["paths"].config))
    fresh.load_state_dict(state["model"])
    x = torch.randint(0, 300, (3, 20), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits_of(fresh, x), logits_of(run["model"], x))
    # fastai's own loader reads it too (with its own allowlist).
    other = build_language_model(LMConfig.load(run["paths"].config))
    load_model(run["paths"].model, other, opt=None, with_opt=False)
    assert torch.equal(logits_of(other, x), logits_of(run["model"], x))


def stage04_learner(learn: Learner, lm_config: LMConfig, path: Path) -> Learner:
    """A fresh Learner with stage 04's recipe, as the README shows it (the data is ``learn``'s)."""
    return Learner(
        learn.dls,
        build_language_model(lm_config),
        loss_func=CrossEntropyLossFlat(),
        opt_func=partial(Adam, wd=0.1, eps=1e-7),
        splitter=language_model_split,
        path=path,
    )


def adam_step(learn: Learner, x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimizer step on a fixed batch, in eval mode (no dropout: deterministic)."""
    model = get_model(learn.model)
    model.eval()
    model.reset()
    learn.opt.zero_grad()
    logits = model(x)[0]
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
    learn.opt.step()


@pytest.mark.parametrize("arch", ARCHS)
def test_final_pth_opens_with_plain_torch_load(trained, arch):
    run = trained[arch]
    state = torch.load(run["paths"].model)  # torch >= 2.6: weights_only=True, no allowlist
    assert set(state) == {"model", "opt"}
    assert_same_weights(state["model"], run["model"].state_dict())
    assert all(v.device.type == "cpu" for v in state["model"].values())
    opt = state["opt"]
    assert type(opt["hypers"]) is list and type(opt["state"]) is list
    assert all(type(v) in (float, int, bool) for h in opt["hypers"] for v in h.values())
    # The optimizer state in the file is the optimizer's at the end of training, value for value.
    want = run["opt_state"]
    assert opt["hypers"] == [dict(h) for h in want["hypers"]]
    assert len(opt["state"]) == len(want["state"]) > 0
    for got, expected in zip(opt["state"], want["state"], strict=True):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(got[key], value), key
            else:
                assert got[key] == value, key


@pytest.mark.parametrize("arch", ARCHS)
def test_fastai_learner_load_restores_weights_and_optimizer(trained, tmp_path, arch):
    run = trained[arch]
    cfg = LMConfig.load(run["paths"].config)
    # Reference: the optimizer state exactly as fastai held it in memory (L, numpy scalars).
    reference = stage04_learner(run["learn"], cfg, tmp_path)
    reference.model.load_state_dict(run["model"].state_dict())
    reference.create_opt()
    reference.opt.load_state_dict(copy.deepcopy(run["opt_state"]))
    loaded = stage04_learner(run["learn"], cfg, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded.load(str(run["paths"].model.with_suffix("")), with_opt=True)  # fastai adds .pth
    assert not [w for w in caught if "optimizer state" in str(w.message)]
    assert_same_weights(loaded.model.state_dict(), run["model"].state_dict())
    assert [dict(h) for h in loaded.opt.hypers] == [dict(h) for h in reference.opt.hypers]
    fresh = stage04_learner(run["learn"], cfg, tmp_path)  # same weights, no optimizer state
    fresh.model.load_state_dict(run["model"].state_dict())
    fresh.create_opt()
    fresh.opt.load_state_dict({"state": [{} for _ in run["opt_state"]["state"]],
                               "hypers": copy.deepcopy(run["opt_state"]["hypers"])})  # fmt: skip

    gen = torch.Generator().manual_seed(5)
    x, y = (torch.randint(0, 300, (4, 20), generator=gen) for _ in range(2))
    for lr in (None, 1e-3):  # the restored hypers, then a new LR set on the plain-list hypers
        for learn in (reference, loaded, fresh):
            if lr is not None:
                learn.opt.set_hypers(lr=lr)
            adam_step(learn, x, y)
        assert_same_weights(loaded.model.state_dict(), reference.model.state_dict())
    differs = [k for k, v in fresh.model.state_dict().items()
               if not torch.equal(v, reference.model.state_dict()[k])]  # fmt: skip
    assert differs  # the moments and step counts mattered, so they were restored


def test_plain_state_converts_fastai_types_and_refuses_others():
    t = torch.ones(2)
    sd = {"state": [{"grad_avg": t, "step": 3, "do_wd": False}],
          "hypers": L([{"lr": np.float64(1e-3), "mom": np.float32(0.9), "n": np.int64(2)}]),
          "pair": (torch.nn.Parameter(torch.zeros(1)), np.bool_(True))}  # fmt: skip
    plain = plain_state(sd)
    assert type(plain["hypers"]) is list and type(plain["hypers"][0]["lr"]) is float
    assert plain["hypers"][0] == {"lr": 1e-3, "mom": float(np.float32(0.9)), "n": 2}
    assert type(plain["hypers"][0]["n"]) is int and plain["pair"][1] is True
    assert plain["state"][0]["grad_avg"] is t  # tensors are shared, not copied
    assert type(plain["pair"][0]) is torch.Tensor
    assert isinstance(sd["hypers"], L) and type(sd["hypers"][0]["lr"]) is np.float64  # untouched
    with pytest.raises(TypeError, match=r"builtins\.object cannot be saved in a plain \.pth"):
        plain_state({"x": [object()]})
    with pytest.raises(TypeError, match="complex128"):
        plain_state(np.complex128(1j))


# ---------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------


def test_load_pth_reads_a_file_written_by_fastai_itself(trained, tmp_path):
    # fastai's save_model (and stage 04 before its .pth went plain) pickles L and numpy scalars.
    learn = trained["awd-lstm"]["learn"]
    save_model(tmp_path / "fastai.pth", learn.model, learn.opt, with_opt=True)
    with pytest.raises(pickle.UnpicklingError, match=r"fastcore\.foundation\.L"):
        torch.load(tmp_path / "fastai.pth")
    state = load_pth(tmp_path / "fastai.pth")
    opt = state["opt"]
    assert isinstance(opt["hypers"], list) and isinstance(opt["state"], list)
    hypers = opt["hypers"][0]
    assert {"lr", "mom", "wd", "eps", "sqr_mom"} <= set(hypers)
    assert all(type(v) in (float, int, bool) for v in hypers.values())  # numpy scalars decoded
    assert hypers["wd"] == 0.1 and hypers["eps"] == 1e-7


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_load_pth_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "marker"
    torch.save(
        {"model": {"w": torch.zeros(2)}, "opt": _WritesMarker(marker)}, tmp_path / "evil.pth"
    )
    with pytest.raises(InputError, match="refusing to load: its pickle needs exec") as err:
        load_pth(tmp_path / "evil.pth")
    assert "arbitrary code" in str(err.value)
    assert not marker.exists()


def test_load_pth_refuses_damaged_files_and_wraps_bare_state_dicts(tmp_path, trained):
    data = trained["qrnn"]["paths"].model.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pth").write_text("not a model")
    for name in ("cut.pth", "text.pth"):
        with pytest.raises(InputError, match="not a torch zip archive"):
            load_pth(tmp_path / name)
    with pytest.raises(InputError, match="not found"):
        load_pth(tmp_path / "missing.pth")
    save_pth({"a": torch.ones(3)}, tmp_path / "bare.pth")
    assert set(load_pth(tmp_path / "bare.pth")) == {"model"}
    save_pth({"model": [1, 2]}, tmp_path / "odd.pth")
    with pytest.raises(InputError, match="not a state dict"):
        load_pth(tmp_path / "odd.pth")


# ---------------------------------------------------------------------------------------------
# Resume and the NaN guard
# ---------------------------------------------------------------------------------------------


def test_resume_after_interruption_equals_an_uninterrupted_run(
    text_corpus, tmp_path, uninterrupted
):
    cfg = tiny_config(text_corpus["bin"], tmp_path, "run", num_epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train_language_model(cfg, callbacks=[InterruptAfterEpochs(1)])
    paths = output_paths(tmp_path, "run")
    checkpoint = load_pth(paths.checkpoint_dir / CHECKPOINT_FILE)
    assert checkpoint["progress"]["epochs_done"] == 1 and not paths.model.exists()
    plain = torch.load(paths.checkpoint_dir / CHECKPOINT_FILE)  # no allowlist needed either
    assert type(plain["opt"]["hypers"]) is list and plain["opt"]["state"]

    changed = tiny_config(
        text_corpus["bin"], tmp_path, "run", num_epochs=2, batch_size=8, resume=True
    )
    with pytest.raises(InputError, match="batch_size: 16 -> 8"):
        train_language_model(changed)

    summary = train_language_model(
        tiny_config(text_corpus["bin"], tmp_path, "run", num_epochs=2, resume=True)
    )
    assert summary.resumed_after_epoch == 1
    # Same data order (seed, epoch), restored RNG states, optimizer and schedule position:
    # bit-for-bit the same weights and history as without the interruption.
    assert_same_weights(load_pth(paths.model)["model"], uninterrupted["model"])
    assert without_time(summary.history) == without_time(uninterrupted["history"])
    assert not paths.checkpoint_dir.exists()


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    text_corpus, tmp_path, uninterrupted
):
    cfg = tiny_config(text_corpus["bin"], tmp_path, "nan", num_epochs=2)
    with pytest.raises(
        TrainingDiverged, match=r"training loss became nan at epoch 2, batch 4"
    ) as err:
        train_language_model(cfg, callbacks=[InjectNaN(epoch=1, batch=3)])
    paths = output_paths(tmp_path, "nan")
    assert "rerun with --resume" in str(err.value)
    assert not paths.model.exists() and not paths.config.exists()
    checkpoint = load_pth(paths.checkpoint_dir / CHECKPOINT_FILE)
    assert checkpoint["progress"]["epochs_done"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    # The checkpoint is the state before the NaN: resuming finishes the uninterrupted run.
    train_language_model(
        tiny_config(text_corpus["bin"], tmp_path, "nan", num_epochs=2, resume=True)
    )
    assert_same_weights(load_pth(paths.model)["model"], uninterrupted["model"])


@pytest.mark.slow
def test_cli_killed_after_epoch_1_resumes_to_the_uninterrupted_weights(
    text_corpus, tmp_path, uninterrupted
):
    script = Path(load_script("04_train_lm").__file__)
    args = [sys.executable, str(script), "--pretokenized-train", str(text_corpus["bin"]),
            "--save-path", str(tmp_path), "--exp-name", "killed", "--num-epochs", "2",
            *TINY_FLAGS]  # fmt: skip
    checkpoint = output_paths(tmp_path, "killed").checkpoint_dir / CHECKPOINT_FILE
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup runs, as after a crash or an OOM kill
    proc.wait(timeout=30)
    assert checkpoint.exists() and not (tmp_path / "killed.pth").exists()
    assert load_pth(checkpoint)["progress"]["epochs_done"] == 1
    result = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "resuming after epoch 1 of 2" in result.stderr
    assert_same_weights(load_pth(tmp_path / "killed.pth")["model"], uninterrupted["model"])


@pytest.mark.slow
def test_fine_tuning_resumes_at_the_phase_boundary_and_mid_phase(trained, text_corpus, tmp_path):
    cfg = TrainConfig(train_path=text_corpus["bin"], save_path=tmp_path, exp_name="ref",
                      pretrained_model=trained["qrnn"]["paths"].model, num_epochs=3,
                      batch_size=16, bptt=20, device="cpu", seed=3)  # fmt: skip
    reference = train_language_model(cfg)
    for stop_after in (1, 2):  # after the frozen epoch; in the middle of the unfrozen phase
        name = f"stop{stop_after}"
        with pytest.raises(KeyboardInterrupt):
            train_language_model(dataclasses.replace(cfg, exp_name=name),
                                 callbacks=[InterruptAfterEpochs(stop_after)])  # fmt: skip
        resumed = train_language_model(dataclasses.replace(cfg, exp_name=name, resume=True))
        assert resumed.resumed_after_epoch == stop_after
        assert_same_weights(load_pth(resumed.paths.model)["model"],
                            load_pth(reference.paths.model)["model"])  # fmt: skip
        assert without_time(resumed.history) == without_time(reference.history)


def test_resume_when_only_the_outputs_are_missing(text_corpus, tmp_path):
    cfg = tiny_config(text_corpus["bin"], tmp_path, "done", bptt=70)
    with pytest.raises(KeyboardInterrupt):  # after the last epoch's checkpoint, before outputs
        train_language_model(cfg, callbacks=[InterruptAfterEpochs(1)])
    record = RecordWeights()
    summary = train_language_model(dataclasses.replace(cfg, resume=True), callbacks=[record])
    assert record.epochs == [] and summary.resumed_after_epoch == 1 and summary.epochs == 1
    state = load_pth(summary.paths.model)
    assert set(state) == {"model", "opt"} and state["opt"]["state"]


def test_resume_without_a_checkpoint_starts_afresh(text_corpus, tmp_path, caplog):
    cfg = tiny_config(text_corpus["bin"], tmp_path, "fresh", resume=True, bptt=70)
    with caplog.at_level("INFO", logger="lm_training"):
        summary = train_language_model(cfg)
    assert "starting from scratch" in caplog.text and summary.resumed_after_epoch is None


# ---------------------------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------------------------


def test_plan_phases():
    base = dict(train_path=Path("c"), save_path=Path("s"), exp_name="e", num_epochs=3)
    assert [(p.name, p.epochs, p.lr, p.frozen) for p in plan_phases(TrainConfig(**base))] == [
        ("pretrain", 3, 5e-3, False)
    ]
    fine = TrainConfig(**base, pretrained_model=Path("m.pth"), finetune_lr=2e-4)
    assert [(p.name, p.epochs, p.lr, p.frozen) for p in plan_phases(fine)] == [
        ("frozen", 1, 5e-3, True),
        ("unfrozen", 2, 2e-4, False),
    ]


def test_fine_tuning_trains_only_the_embedding_and_decoder_first(trained, text_corpus, tmp_path):
    pretrained = trained["awd-lstm"]["paths"].model
    start = load_pth(pretrained)["model"]
    record = RecordWeights()
    cfg = TrainConfig(
        train_path=text_corpus["bin"],
        save_path=tmp_path,
        exp_name="ft",
        pretrained_model=pretrained,
        num_epochs=2,
        batch_size=16,
        bptt=20,
        device="cpu",
        seed=2,
    )
    summary = train_language_model(cfg, callbacks=[record])
    assert [row["phase"] for row in summary.history] == ["frozen", "unfrozen"]
    frozen_epoch, unfrozen_epoch = record.epochs
    recurrent = [k for k in start if k.startswith("0.rnns.")]
    assert recurrent and all(torch.equal(frozen_epoch[k], start[k]) for k in recurrent)
    for key in ("0.encoder.weight", "1.decoder.bias"):
        assert not torch.equal(frozen_epoch[key], start[key]), key
    assert all(not torch.equal(unfrozen_epoch[k], start[k]) for k in recurrent)
    assert LMConfig.load(summary.paths.config).emb_size == 32  # the architecture came along


def _fake_pretrained(tmp_path: Path, vocab_size: int, arch: str = "awd-lstm") -> Path:
    cfg = LMConfig.create(arch, vocab_size, emb_size=32, hidden_size=64, n_layers=2)
    path = tmp_path / f"pre-{vocab_size}.pth"
    save_model(path, build_language_model(cfg), None, with_opt=False)
    cfg.save(sidecar_path(path))
    return path


def test_fine_tuning_needs_the_same_vocabulary(text_corpus, tmp_path):
    cfg = TrainConfig(
        train_path=text_corpus["bin"],
        save_path=tmp_path,
        exp_name="ft",
        pretrained_model=_fake_pretrained(tmp_path, 301),
        device="cpu",
    )
    with pytest.raises(
        InputError, match=r"vocabulary of 301 pieces, but the training corpus has 300"
    ):
        train_language_model(cfg)


def test_fine_tuning_refuses_a_different_architecture(text_corpus, tmp_path):
    pre = _fake_pretrained(tmp_path, 300, arch="qrnn")
    cfg = TrainConfig(
        train_path=text_corpus["bin"],
        save_path=tmp_path,
        exp_name="ft",
        pretrained_model=pre,
        arch="awd-lstm",
        hidden_size=64,
        device="cpu",
    )
    with pytest.raises(InputError, match=r"arch=awd-lstm \(the model has qrnn\)"):
        train_language_model(cfg)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _edited_copy(corpus: Path, target: Path, **meta_changes) -> Path:
    shutil.copytree(corpus, target)
    meta = json.loads((target / "meta.json").read_text())
    (target / "meta.json").write_text(json.dumps({**meta, **meta_changes}))
    return target


def test_mismatched_corpora_are_refused_naming_both_values(text_corpus, tmp_path):
    base = dict(train_path=text_corpus["bin"], save_path=tmp_path, exp_name="x", device="cpu")
    other_vocab = _edited_copy(text_corpus["bin"], tmp_path / "v301", vocab_size=301)
    with pytest.raises(
        InputError, match="vocabulary of 300 pieces but the validation corpus has 301"
    ):
        train_language_model(TrainConfig(**base, valid_path=other_vocab))
    other_spm = _edited_copy(text_corpus["bin"], tmp_path / "sha", spm_model_sha256="f" * 64)
    with pytest.raises(InputError, match=r"sha256 \w{64} but the validation corpus with f{64}"):
        train_language_model(TrainConfig(**base, valid_path=other_spm))
    with pytest.raises(InputError, match=r"--vocab-size 400 does not match .* vocabulary of 300"):
        train_language_model(TrainConfig(**base, vocab_size=400))
    with pytest.raises(InputError, match="pass --vocab-size"):
        train_language_model(TrainConfig(**{**base, "train_path": text_corpus["ids"]}))


def test_train_config_validation(tmp_path):
    base = dict(train_path=tmp_path, save_path=tmp_path, exp_name="x")
    for changes, message in [
        ({"arch": "gru"}, "unknown architecture"),
        ({"precision": "fp8"}, "unknown precision"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"valid_fraction": 0.0}, "valid_fraction"),
        ({"exp_name": "a/b"}, "plain file name"),
    ]:
        with pytest.raises(InputError, match=message):
            TrainConfig(**{**base, **changes})


# ---------------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    return load_script("04_train_lm").main


def test_cli_help_lists_the_predecessor_flags(cli):
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for flag in [
        "--pretokenized-train",
        "--pretokenized-valid",
        "--min-seq-len",
        "--max-seq-len",
        "--batch-size",
        "--vocab-size",
        "--num-epochs",
        "--num-hidden-layers",
        "--pretrain-lr",
        "--finetune-lr",
        "--pretrained-model",
        "--save-path",
        "--exp-name",
        "--qrnn",
        "--arch",
        "--drop-mult",
        "--lr-find",
        "--fp16",
        "--bf16",
        "--device",
        "--resume",
        "--seed",
        "--valid-fraction",
    ]:
        assert flag in result.output, flag


def test_cli_trains_on_text_ids_with_the_qrnn_alias(cli, text_corpus, tmp_path):
    args = [
        "--pretokenized-train",
        str(text_corpus["ids"]),
        "--pretokenized-valid",
        str(text_corpus["bin"]),  # the formats mix; here the validation text is seen in training
        "--vocab-size",
        "300",
        "--qrnn",
        "--fp16",
        "--min-seq-len",
        "3",
        "--save-path",
        str(tmp_path),
        "--exp-name",
        "ids",
        *TINY_FLAGS,
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "fp16 is for CUDA only; training in fp32 on cpu" in result.output
    assert "trained 1 epoch(s)" in result.output and "perplexity" in result.output
    # The whole validation corpus, no held-out split; --min-seq-len 3 drops no line of this text.
    assert "valid: 1365 lines (0 shorter than 3 tokens dropped)" in result.output
    cfg = LMConfig.load(tmp_path / "ids.json")
    assert cfg.arch == "qrnn"
    assert cfg.spm_model_sha256 == BinaryCorpus.open(text_corpus["bin"]).meta["spm_model_sha256"]
    assert (tmp_path / "ids.pth").is_file() and (tmp_path / "ids.history.csv").is_file()
    clash = CliRunner().invoke(cli, [*args, "--arch", "awd-lstm"])
    assert clash.exit_code == 2 and "--qrnn contradicts --arch awd-lstm" in clash.output


def test_cli_errors_are_one_line(cli, text_corpus, tmp_path):
    base = [
        "--pretokenized-train",
        str(text_corpus["bin"]),
        "--save-path",
        str(tmp_path),
        "--exp-name",
        "e",
        *TINY_FLAGS,
    ]
    result = CliRunner().invoke(cli, [*base, "--vocab-size", "301"])
    assert result.exit_code == 1
    assert "Error: --vocab-size 301 does not match the training corpus's vocabulary of 300" in (
        result.output
    )
    assert "Traceback" not in result.output
    diverged = CliRunner().invoke(cli, [*base, "--pretrain-lr", "1e5"])
    assert diverged.exit_code == 1 and "Error: training diverged" in diverged.output
    assert not (tmp_path / "e.pth").exists()


def test_cli_lr_find_saves_a_plot_and_trains_nothing(cli, text_corpus, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "--pretokenized-train",
            str(text_corpus["bin"]),
            "--save-path",
            str(tmp_path),
            "--exp-name",
            "lr",
            "--lr-find",
            *TINY_FLAGS,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "suggested learning rate" in result.output
    png = tmp_path / "lr.lr_find.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["lr.lr_find.png"]


def test_lm_training_never_imports_tensorflow():
    modules = sorted(p.stem for p in (REPO_ROOT / "lm_training").glob("*.py"))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('lm_training.' + m)\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "assert not roots & {'tensorflow', 'keras', 'ulmfit_keras', 'convert'}, roots"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
