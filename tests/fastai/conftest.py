"""Fixtures shared by the fastai-environment tests."""

from __future__ import annotations

import logging
import signal

import pytest


@pytest.fixture
def restore_process_state():
    """run_stage reconfigures the root logger and SIGTERM; undo that after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sigterm = signal.getsignal(signal.SIGTERM)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    signal.signal(signal.SIGTERM, sigterm)
