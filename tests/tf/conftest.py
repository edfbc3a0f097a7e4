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
