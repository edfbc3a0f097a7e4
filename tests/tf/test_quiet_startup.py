"""TF scripts keep TensorFlow's start-up log off stderr unless -v or TF_CPP_MIN_LOG_LEVEL is set.

Two tests run a real script (10_train_classifier.py on a TSV without its text column: it fails
after TensorFlow is imported); the rest test ulmfit_core.quiet_tf without TensorFlow.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, SHARED_DATA
from ulmfit_core import quiet_tf
from ulmfit_core.quiet_tf import quiet_tensorflow, quiet_tf_environ, verbose_requested

TF_SCRIPTS = [
    "05_convert",
    "06_evaluate_lm",
    "07_try_export",
    "10_train_classifier",
    "11_train_regressor",
    "12_train_tagger",
]
# Lines as TF 2.21 prints them while it loads (and the absl banner before them).
START_UP_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796162672.920460    3602 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1796162672.921582    3602 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
    "E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to register cuDNN factory\n"
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not "
    "find cuda drivers on your machine, GPU will not be used.\n"
)
OTHER_LINES = (
    "/venv/site-packages/x.py:3: DeprecationWarning: a Python warning\n"
    "F0000 00:00:1796162672.921582    3602 platform.cc:9] a fatal error\n"
)

needs_tf = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="tensorflow is not installed"
)


def run_classifier_without_text_column(
    tmp_path: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    tsv = tmp_path / "no_text.tsv"
    tsv.write_text("text\tsentiment\nhello\tPOSITIVE\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != quiet_tf.TF_LOG_LEVEL_VAR}
    args = [
        "--train-tsv",
        str(tsv),
        "--label-map",
        str(SHARED_DATA / "document_classification_labels.txt"),
        "--data-column-name",
        "sentence",
        "--gold-column-name",
        "sentiment",
        "--model-weights-cp",
        str(tmp_path),
        "--out-path",
        str(tmp_path / "out"),
    ]
    script = REPO_ROOT / "scripts" / "10_train_classifier.py"
    return subprocess.run(
        [sys.executable, str(script), *args, *flags],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )


def expected_error(tmp_path: Path) -> str:
    tsv = tmp_path / "no_text.tsv"
    return f"Error: {tsv}: missing column(s) sentence; columns found: text, sentiment\n"


@needs_tf
def test_bad_input_prints_only_our_error(tmp_path):
    result = run_classifier_without_text_column(tmp_path)
    assert (result.returncode, result.stderr) == (1, expected_error(tmp_path))


@needs_tf
def test_verbose_lets_tensorflow_log_through_and_our_error_stays_last(tmp_path):
    result = run_classifier_without_text_column(tmp_path, "-v")
    assert result.returncode == 1
    # Whatever TensorFlow printed (nothing, on some machines) comes before our line.
    assert result.stderr.endswith(expected_error(tmp_path)), result.stderr


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["-v"], True),
        (["--verbose"], True),
        (["--train-tsv", "a.tsv", "-v", "--lr", "1e-3"], True),
        (["-xv"], True),  # bundled short flags, as click accepts them
        ([], False),
        (["--train-tsv", "verbose.tsv", "--lr", "-1e-3"], False),
        (["--verbosity", "1"], False),
        (["--", "-v"], False),  # an argument, not an option
    ],
)
def test_verbose_requested(argv, verbose):
    assert verbose_requested(argv) is verbose


def test_quiets_tensorflow_when_the_user_set_nothing():
    environ = {"HOME": "/home/me"}
    assert quiet_tf_environ([], environ)
    assert environ == {"HOME": "/home/me", "TF_CPP_MIN_LOG_LEVEL": quiet_tf.QUIET_LEVEL}


@pytest.mark.parametrize("argv", [["-v"], ["--verbose"]])
def test_verbose_sets_nothing(argv):
    environ = {"HOME": "/home/me"}
    assert not quiet_tf_environ(argv, environ)
    assert environ == {"HOME": "/home/me"}


@pytest.mark.parametrize("argv", [[], ["-v"]])
def test_user_set_level_is_left_alone(argv):
    environ = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")
    before = dict(environ)
    assert not quiet_tf_environ(argv, environ)
    assert environ == before


def emit(text: str) -> None:
    """Write to fd 2 as TF's C++ code does, past sys.stderr."""
    os.write(2, text.encode())


@pytest.fixture
def tensorflow_not_imported(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)


@pytest.mark.usefixtures("tensorflow_not_imported")
def test_start_up_lines_are_dropped_and_the_rest_kept(capfd):
    environ: dict[str, str] = {}
    with quiet_tensorflow([], environ):
        emit(START_UP_LINES + OTHER_LINES)
    assert capfd.readouterr().err == OTHER_LINES
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": quiet_tf.QUIET_LEVEL}


@pytest.mark.usefixtures("tensorflow_not_imported")
def test_a_failed_import_shows_everything_it_printed(capfd):
    with pytest.raises(ImportError, match="libcudart"), quiet_tensorflow([], {}):
        emit(START_UP_LINES)
        raise ImportError("libcudart.so.12: cannot open shared object file")
    assert capfd.readouterr().err == START_UP_LINES


@pytest.mark.usefixtures("tensorflow_not_imported")
@pytest.mark.parametrize(("argv", "environ"), [(["-v"], {}), ([], {"TF_CPP_MIN_LOG_LEVEL": "0"})])
def test_nothing_is_captured_when_not_quieting(capfd, argv, environ):
    with quiet_tensorflow(argv, environ):
        emit(START_UP_LINES)
    assert capfd.readouterr().err == START_UP_LINES


def test_nothing_is_done_once_tensorflow_is_imported(monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    environ: dict[str, str] = {}
    with quiet_tensorflow([], environ):
        emit(START_UP_LINES)
    assert capfd.readouterr().err == START_UP_LINES
    assert environ == {}


def _module_imports(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("name", TF_SCRIPTS)
def test_every_tf_script_quiets_tensorflow_before_importing_it(name):
    source = (REPO_ROOT / "scripts" / f"{name}.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    quiet = [
        node
        for node in tree.body
        if isinstance(node, ast.With)
        and ast.unparse(node.items[0].context_expr) == "quiet_tensorflow(sys.argv[1:])"
    ]
    assert len(quiet) == 1, f"{name}: no `with quiet_tensorflow(sys.argv[1:]):` at top level"
    assert ast.unparse(quiet[0].body[0]) == "import tensorflow"
    # Only the standard library, click and quiet_tf itself may be imported before it.
    early = {module for line, module in _module_imports(tree) if line < quiet[0].lineno}
    allowed = {"__future__", "logging", "sys", "pathlib", "click", "ulmfit_core.quiet_tf"}
    assert early <= allowed, f"{name}: imported before quieting TF: {early - allowed}"
    assert "TF_CPP_MIN_LOG_LEVEL" not in source  # one place for it: ulmfit_core.quiet_tf
