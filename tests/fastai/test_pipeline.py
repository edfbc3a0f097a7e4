"""Stages run as a user runs them: as processes, killed midway, and driven by make."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretraining_utils.demo_corpus import write_demo_corpus
from tests.helpers import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"


@pytest.fixture(scope="module")
def raw_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "raw.txt"
    write_demo_corpus(path, max_bytes=150_000)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, raw_corpus) -> dict[str, Path]:
    """Sentences, Punkt parameters and an SPM model from the real stages, built once."""
    out = tmp_path_factory.mktemp("prepared")
    sentences = out / "sentences.txt"
    _stage("01_cleanup", "--input-text", raw_corpus, "--out-path", sentences, "--workers", "1")
    _stage(
        "02_build_spm",
        "--corpus-path",
        sentences,
        "--vocab-size",
        "300",
        "--model-prefix",
        out / "spm",
        "--num-threads",
        "1",
    )
    return {
        "sentences": sentences,
        "punkt": Path(f"{sentences}.punkt.json"),
        "spm": out / "spm-sp300.model",
    }


def _stage(name: str, *args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPTS / f"{name}.py"), *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the stage to start writing")
        time.sleep(0.05)


def _temp_entries(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if ".tmp-" in name]


def _default_disposition(*signals: signal.Signals):
    """A ``preexec_fn`` giving the child the default handling of the signals a test sends.

    A child inherits "ignored" dispositions: under ``nohup``, ``make test &`` or a job runner
    SIGINT arrives ignored, Python then installs no KeyboardInterrupt handler, and the stage is
    right to honour that. A test that sends the signal must not depend on how it was launched.
    """
    catchable = [s for s in signals if s != signal.SIGKILL]

    def reset() -> None:
        for sig in catchable:
            signal.signal(sig, signal.SIG_DFL)

    return reset


def _start_on_fifo(
    tmp_path: Path, stage: str, *args, signals: tuple[signal.Signals, ...] = ()
) -> tuple[subprocess.Popen, Path]:
    """Start a stage reading a FIFO that gets some lines but no EOF: it is stuck mid-run.

    ``signals`` are the ones the test will send; the child gets their default disposition.
    """
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    cmd = [
        sys.executable,
        str(SCRIPTS / f"{stage}.py"),
        *[str(a).replace("{fifo}", str(fifo)) for a in args],
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_default_disposition(*signals),
    )
    writer = open(fifo, "w", encoding="utf-8")  # noqa: SIM115 - held open on purpose
    writer.write("A first line of text. And a second sentence here.\n" * 200)
    writer.flush()
    return proc, writer


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name
)
def test_cleanup_killed_midway_leaves_no_output(tmp_path, prepared, sig):
    _interrupt_cleanup_midway(tmp_path, prepared, sig)


def test_cleanup_interrupt_works_when_parent_ignores_sigint(tmp_path, prepared):
    """As under `nohup make test &`: the test process ignores SIGINT, the stage still gets it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _interrupt_cleanup_midway(tmp_path, prepared, signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_child_inherits_ignored_sigint_without_the_reset():
    """The premise of the two tests above: without the reset, the child's SIGINT stays ignored."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        inherited = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
        )
        reset = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_default_disposition(signal.SIGINT),
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (inherited.stdout.strip(), reset.stdout.strip()) == ("True", "False")


def _interrupt_cleanup_midway(tmp_path: Path, prepared: dict[str, Path], sig) -> None:
    out = tmp_path / "out" / "sentences.txt"
    proc, writer = _start_on_fifo(
        tmp_path,
        "01_cleanup",
        "--input-text",
        "{fifo}",
        "--out-path",
        out,
        "--punkt-params",
        prepared["punkt"],
        "--workers",
        "1",
        signals=(sig,),
    )
    _wait_for(lambda: out.parent.is_dir() and _temp_entries(out.parent))
    proc.send_signal(sig)
    proc.wait(timeout=30)
    writer.close()
    assert proc.returncode != 0
    assert not out.exists()
    if sig != signal.SIGKILL:  # a catchable signal also removes the temporary file
        assert _temp_entries(out.parent) == []
        assert "interrupted" in proc.stderr.read()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_encode_killed_midway_leaves_no_output(tmp_path, prepared, sig):
    out = tmp_path / "out" / "corpus"
    proc, writer = _start_on_fifo(
        tmp_path,
        "03_encode_spm",
        "--corpus-path",
        "{fifo}",
        "--model-path",
        prepared["spm"],
        "--output-format",
        "bin",
        "--save-path",
        out,
        "--workers",
        "1",
        signals=(sig,),
    )
    _wait_for(lambda: out.parent.is_dir() and _temp_entries(out.parent))
    proc.send_signal(sig)
    proc.wait(timeout=30)
    writer.close()
    assert proc.returncode != 0
    assert not out.exists()
    if sig != signal.SIGKILL:
        assert _temp_entries(out.parent) == []


def test_build_spm_killed_midway_leaves_no_model_and_rerun_completes(tmp_path, prepared):
    big = tmp_path / "big.txt"
    with open(big, "w", encoding="utf-8") as f:
        for _ in range(8):  # long enough that training is surely still running when killed
            f.write(prepared["sentences"].read_text(encoding="utf-8"))
    out_dir = tmp_path / "spm"
    args = [
        "--corpus-path",
        big,
        "--vocab-size",
        "1000",
        "--model-prefix",
        out_dir / "m",
        "--num-threads",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "02_build_spm.py"), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: out_dir.is_dir() and _temp_entries(out_dir))
    proc.kill()
    proc.wait(timeout=30)
    assert not (out_dir / "m-sp1k.model").exists()
    _stage("02_build_spm", *args)
    assert (out_dir / "m-sp1k.model").exists() and (out_dir / "m-sp1k.vocab").exists()


def _make(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # This interpreter runs the stages; an empty FASTAI_ENV keeps make away from the venvs.
    cmd = ["make", "--no-print-directory", f"FASTAI_PY={sys.executable}", "FASTAI_ENV=", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_make_pipeline_is_incremental(tmp_path, raw_corpus):
    variables = [f"RUN={tmp_path / 'run'}", f"CORPUS={raw_corpus}", "VOCAB=300", "WORKERS=2"]
    first = _make("encode", *variables)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    for artifact in ["sentences.txt", "spm/spm-sp300.model", "ids.txt", "corpus/meta.json"]:
        assert (run / artifact).exists(), artifact

    assert _make("-q", "encode", *variables).returncode == 0  # -q: 0 means up to date
    second = _make("encode", *variables)
    assert second.returncode == 0
    assert "scripts/" not in second.stdout, second.stdout

    # A newer corpus makes every stage stale again.
    os.utime(raw_corpus, (time.time() + 5, time.time() + 5))
    assert _make("-q", "encode", *variables).returncode == 1


def test_make_names_spm_model_like_stage_02():
    for vocab, name in [(5000, "sp5k"), (35000, "sp35k"), (5500, "sp5500"), (1000, "sp1k")]:
        result = _make("print-SPM_MODEL", f"VOCAB={vocab}", "RUN=runs/x")
        assert result.stdout.strip() == f"runs/x/spm/spm-{name}.model"
