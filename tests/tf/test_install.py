"""The TF side installs like any package: `pip install '.[tf]'` puts the Keras library and the
converter into a fresh venv, and they work from a directory that knows nothing of the checkout.

A real (non-editable) install of a copy of the checkout into a new venv in tmp_path. The venv sees
this environment's third-party packages (TensorFlow, Keras, setuptools, pip) through one path line
in a .pth file, so nothing is downloaded: that line is scaffolding for the dependencies only. The
project's own code comes from the wheel pip builds: this environment's editable install of the
project is in that directory too, but its finder is never activated (a path line adds a directory
to sys.path; the .pth files inside it are not run), and the test checks that every project module
imported comes from the new venv's site-packages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TF_EXTRA = "tf"

# Run by the new venv's python, from tmp_path, in isolated mode (-I: no PYTHONPATH, no cwd).
USE_LIBRARY = textwrap.dedent(
    """
    import importlib.metadata as md
    import json
    import sys

    import numpy as np

    import convert
    import ulmfit_core
    import ulmfit_keras as uk
    from keras.src.backend import get_keras_mask

    config = {
        "arch": "awd-lstm", "vocab_size": 50, "emb_size": 8, "hidden_size": 12, "n_layers": 2,
        "pad_id": uk.PAD_ID, "input_p": 0.1, "weight_p": 0.1, "embed_p": 0.05, "hidden_p": 0.1,
        "output_p": 0.1, "windows": None, "tie_weights": True, "out_bias": True, "bidir": False,
    }
    encoder, lm = uk.build_encoder(config, seed=0)
    rng = np.random.default_rng(0)
    lengths = (7, 3)
    ids = np.full((len(lengths), 7), uk.PAD_ID, dtype="int32")
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(4, 50, size=n)
    hidden = encoder(ids)
    mask = get_keras_mask(hidden)
    alone = np.asarray(encoder(ids[1:2, : lengths[1]]))[0]
    dist = md.distribution("ulmfit-toolchain")
    print(json.dumps({
        "modules": {m.__name__: m.__file__ for m in (uk, ulmfit_core, convert)},
        "sys_path": sys.path,
        "hidden_shape": list(hidden.shape),
        "logits_shape": list(lm(ids).shape),
        "mask": None if mask is None else np.asarray(mask).tolist(),
        "want_mask": (ids != uk.PAD_ID).tolist(),
        "padding_max_diff": float(np.abs(np.asarray(hidden)[1, : lengths[1]] - alone).max()),
        "top_level": sorted({str(f).split("/")[0] for f in dist.files}),
        "requires": dist.requires,
    }))
    """
)


def _source_copy(dest: Path) -> Path:
    """What a checkout holds for the build: pyproject.toml, README.md, the requirement files and
    every top-level package directory (tests/ and benchmarks/ too: the package list decides)."""
    dest.mkdir()
    requirement_files = [p.name for p in REPO_ROOT.glob("requirements*.txt")]
    for name in ("pyproject.toml", "README.md", *requirement_files):
        shutil.copy2(REPO_ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for init in REPO_ROOT.glob("*/__init__.py"):
        shutil.copytree(init.parent, dest / init.parent.name, ignore=ignore)
    return dest


def _run(cmd: list[str], cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _requirement_lines(name: str) -> list[str]:
    lines = (REPO_ROOT / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_tf_side_installs_into_a_fresh_venv_and_works_outside_the_checkout(tmp_path):
    deps = Path(sysconfig.get_path("purelib"))
    if not (deps / "keras").is_dir() or not (deps / "setuptools").is_dir():
        pytest.skip(f"keras and setuptools are not in {deps}: run in the TF environment")
    src = _source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            cwd=tmp_path,
        ).stdout.strip()
    )
    assert site.is_relative_to(venv)
    (site / "tf_env_dependencies.pth").write_text(f"{deps}\n", encoding="utf-8")

    # What `pip install '.[tf]'` does, less fetching the dependencies: build a wheel of the
    # source (setuptools from this environment) and install it.
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--ignore-installed",
            "--quiet",
            f"{src}[{TF_EXTRA}]",
        ],
        cwd=tmp_path,
    )
    shutil.rmtree(src)  # nothing may still point at the source
    script = tmp_path / "use_library.py"
    script.write_text(USE_LIBRARY, encoding="utf-8")
    out = json.loads(_run([str(python), "-I", str(script)], cwd=tmp_path).stdout.splitlines()[-1])

    for name, file in out["modules"].items():
        assert Path(file).is_relative_to(site), f"{name} imported from {file}, not from {site}"
    # Nothing of the checkout on sys.path but the dependency directory (the venv may be in it).
    in_repo = [p for p in out["sys_path"] if p and Path(p).resolve().is_relative_to(REPO_ROOT)]
    assert not [p for p in in_repo if Path(p).resolve() != deps.resolve()], out["sys_path"]
    # Only the project's packages are in the distribution, not tests/, benchmarks/ or scripts/.
    assert {"ulmfit_core", "ulmfit_keras", "convert"} <= set(out["top_level"])
    assert not {"tests", "benchmarks", "scripts"} & set(out["top_level"])
    # The extras are the exact pins of the requirement files.
    requires = {re.sub(r"\s", "", r) for r in out["requires"]}
    for extra, file in (("tf", "requirements-tf.txt"), ("fastai", "requirements-fastai.txt")):
        for line in _requirement_lines(file):
            assert f'{line};extra=="{extra}"' in requires, (extra, line, sorted(requires))

    assert out["hidden_shape"] == [2, 7, 8]  # tied weights: the last layer has emb_size units
    assert out["logits_shape"] == [2, 7, 50]
    assert out["mask"] == out["want_mask"]
    assert out["padding_max_diff"] < 1e-5
