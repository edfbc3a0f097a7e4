"""Distributed data parallel training, run for real: 2 CPU processes, gloo, under torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lm_training.config import TrainConfig
from lm_training.train import train_language_model
from pretraining_utils.corpus import BinaryCorpusWriter
from tests.helpers import REPO_ROOT
from ulmfit_core.ids import BOS_ID, EOS_ID
from ulmfit_torch.checkpoint_io import load_pth

SCRIPT = REPO_ROOT / "scripts" / "04_train_lm.py"
VOCAB = 64
# No dropout: the two processes draw different masks than one process would, everything else is
# the same computation, so one process with the global batch must give the same model.
TINY = dict(
    emb_size=16,
    hidden_size=32,
    n_layers=2,
    bptt=10,
    num_epochs=2,
    drop_mult=0.0,
    device="cpu",
    seed=5,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Lines with a learnable pattern: <s> a a+1 a+2 ... </s>."""
    directory = tmp_path_factory.mktemp("dist") / "corpus"
    directory.mkdir()
    rng = np.random.default_rng(0)
    lines = [
        np.concatenate([[BOS_ID], 4 + (a + np.arange(n)) % (VOCAB - 4), [EOS_ID]])
        for a, n in zip(rng.integers(0, VOCAB, 600), rng.integers(3, 20, 600), strict=True)
    ]
    writer = BinaryCorpusWriter(directory, VOCAB)
    writer.append(np.concatenate(lines), np.array([len(line) for line in lines]))
    writer.finish()
    return directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FLAGS = ["--emb-size", "16", "--hidden-size", "32", "--num-hidden-layers", "2",
         "--max-seq-len", "10", "--num-epochs", "2", "--drop-mult", "0", "--device", "cpu",
         "--seed", "5", "--batch-size", "4"]  # fmt: skip


def _torchrun(corpus: Path, save_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 scripts/04_train_lm.py ...`` on CPU (gloo)."""
    for _ in range(3):  # another process may take the free port before torchrun binds it
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(SCRIPT),
               "--pretokenized-train", str(corpus), "--save-path", str(save_path),
               *FLAGS, *extra]  # fmt: skip
        result = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if "address already in use" not in result.stderr.lower():
            break
    return result


def test_two_processes_train_the_model_one_process_trains_with_the_global_batch(corpus, tmp_path):
    result = _torchrun(corpus, tmp_path, "--exp-name", "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 1 of 2 on cpu" in result.stderr
    assert result.stderr.count("trained 2 epoch(s)") == 1  # the summary comes from rank 0 only

    single = train_language_model(
        TrainConfig(train_path=corpus, save_path=tmp_path, exp_name="single", batch_size=8, **TINY)
    )
    ddp, one = load_pth(tmp_path / "ddp.pth")["model"], load_pth(single.paths.model)["model"]
    assert ddp.keys() == one.keys()
    for key in ddp:  # gradients were averaged over the processes instead of over one batch
        torch.testing.assert_close(ddp[key], one[key], atol=2e-5, rtol=1e-4, msg=key)
    ddp_history = (tmp_path / "ddp.history.csv").read_text().splitlines()
    valid_losses = [float(row.split(",")[3]) for row in ddp_history[1:]]
    # Metrics are averaged over both processes' halves of the validation streams.
    assert valid_losses == pytest.approx([row["valid_loss"] for row in single.history], abs=1e-4)
    assert single.history[-1]["valid_loss"] < single.history[0]["valid_loss"]
    assert not (tmp_path / "ddp.ckpt").exists()


@pytest.mark.slow
def test_a_nan_loss_stops_every_process_without_deadlock(corpus, tmp_path):
    result = _torchrun(corpus, tmp_path, "--exp-name", "nan", "--pretrain-lr", "1e6")
    assert result.returncode != 0
    assert result.stderr.count("Error: training diverged") == 2, result.stderr[-3000:]
    assert not (tmp_path / "nan.pth").exists()
