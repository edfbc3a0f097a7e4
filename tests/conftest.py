"""Fixtures shared by both environments' test suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test data not found: {SHARED_DATA} (shared/ must sit beside the repo)")
    return SHARED_DATA
