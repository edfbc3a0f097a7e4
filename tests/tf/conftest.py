"""Fixtures for the TensorFlow-environment tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny PyTorch references: torch's thread handoffs cost more than they give, and far more
    when other processes share the cores (measured: 3x slower LSTM references on 2 loaded cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    """A tiny AWD-LSTM export in the converter's layout (tests/tf/tiny.py)."""
    from tests.tf.tiny import write_tiny_export

    return write_tiny_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="session")
def qrnn_export_dir(tmp_path_factory):
    """The same with a tiny QRNN encoder."""
    from tests.tf.tiny import write_tiny_export

    return write_tiny_export(tmp_path_factory.mktemp("qrnn-export"), arch="qrnn")
