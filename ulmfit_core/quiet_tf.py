"""Keep TensorFlow's C++ start-up log off a script's stderr (stdlib only; never imports TF).

TensorFlow's shared libraries log through absl before ``absl::InitializeLog()`` has run, and
until then absl writes every message to stderr whatever ``TF_CPP_MIN_LOG_LEVEL`` says (see
abseil-cpp PR #1957). So "Could not find cuda drivers", the oneDNN notice and absl's banner "All
log messages before absl::InitializeLog() is called are written to STDERR" print during
``import tensorflow`` (twice, with TF 2.21) and no variable stops them; they are filtered out of
fd 2 for that import. Afterwards TF does honour ``TF_CPP_MIN_LOG_LEVEL``. A TF script therefore
starts, before any import that pulls in TensorFlow, with::

    with quiet_tensorflow(sys.argv[1:]):
        import tensorflow  # noqa: F401

``-v``/``--verbose`` on the command line, or a ``TF_CPP_MIN_LOG_LEVEL`` the user set, turns all
of this off: nothing is set, nothing is captured.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, MutableMapping, Sequence

# The names of ulmfit_core.cli.verbose_option, which uses these; click parses them only
# after the imports, so the decision is taken from argv here.
VERBOSE_FLAGS = ("--verbose", "-v")
TF_LOG_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
# 3: only FATAL; on a machine without a GPU, TF's C++ ERRORs are noise too ("failed call to
# cuInit" at the first op). -v shows them all.
QUIET_LEVEL = "3"

# What TF's libraries print while they load, and only that, below FATAL as QUIET_LEVEL says:
# absl's banner, absl lines ("I0000 00:00:1796162672.920460    3602 port.cc:153] ..."; before
# absl is initialised the time is seconds since the epoch) and TF's own format ("2025-09-17
# 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] ...").
_START_UP_LOG_LINE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] "
)


def verbose_requested(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (without the program name) asks for ``-v``/``--verbose``.

    Short flags may be bundled (``-qv``); everything after ``--`` is an argument. A ``-v`` that
    is really an option's value counts too: the cost of that mistake is only more output.
    """
    long_flag, short_flag = VERBOSE_FLAGS
    for arg in argv:
        if arg == "--":
            return False
        if arg == long_flag:
            return True
        bundle = arg[1:]
        if arg[:1] == "-" and bundle.isalpha() and short_flag[1] in bundle:
            return True
    return False


def quiet_tf_environ(argv: Sequence[str], environ: MutableMapping[str, str]) -> bool:
    """Set ``TF_CPP_MIN_LOG_LEVEL`` in ``environ`` unless verbose or set by the user.

    Returns whether TensorFlow is to be quieted; when not, ``environ`` is left as it was.
    """
    if verbose_requested(argv) or TF_LOG_LEVEL_VAR in environ:
        return False
    environ[TF_LOG_LEVEL_VAR] = QUIET_LEVEL
    return True


@contextlib.contextmanager
def quiet_tensorflow(
    argv: Sequence[str], environ: MutableMapping[str, str] | None = None
) -> Iterator[None]:
    """Quiet TensorFlow for the ``import tensorflow`` inside the ``with`` block.

    Sets ``TF_CPP_MIN_LOG_LEVEL`` (see :func:`quiet_tf_environ`) and holds stderr's file
    descriptor in a temporary file for the block: TF's start-up log lines are dropped and
    anything else (a Python warning, a FATAL line) is written back. If the block raises, all of
    it is written back, so a failed import shows everything TF said. Does nothing if TensorFlow
    is already imported: its lines are out, and in a test process argv is pytest's.
    """
    environ = os.environ if environ is None else environ
    if "tensorflow" in sys.modules or not quiet_tf_environ(argv, environ):
        yield
        return
    with _stderr_fd_filtered():
        yield


@contextlib.contextmanager
def _stderr_fd_filtered() -> Iterator[None]:
    """Point fd 2 (C++ writes there, not to sys.stderr) at a temporary file for the block, then
    restore it and write back what came, less the start-up log lines if the block succeeded."""
    if sys.stderr is None:  # started with fd 2 closed: nothing to quiet
        yield
        return
    # A file, not a pipe: no writer can block on it. Opened outside `with` to catch only this.
    try:
        captured = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the `with` below
    except OSError:  # no writable temporary directory: better noise than no run
        yield
        return
    with captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().splitlines(keepends=True)
            if succeeded:
                lines = [line for line in lines if not _START_UP_LOG_LINE.match(line)]
            _write_all(2, b"".join(lines))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
