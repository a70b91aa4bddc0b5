"""Shared pytest fixtures: where the (read-only, never copied) test data lives."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# The detector keeps XNNPACK off AMX with a seccomp filter that its process, and every process it
# starts, keeps for good (limelight/amx.py). The test process leaves AMX alone, so that
# tests/test_amx.py can start processes with and without the filter; results are the same either way.
os.environ.setdefault("LIMELIGHT_ALLOW_AMX", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the shared test data: $LIMELIGHT_DATA, else <repo>/../shared/data."""
    return Path(os.environ.get("LIMELIGHT_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def clip(data_dir: Path) -> Callable[[str], Path]:
    """`clip(name)` -> path of videos/clips/<name>; skips the test when the file is absent."""

    def find(name: str) -> Path:
        path = data_dir / "videos" / "clips" / name
        if not path.is_file():
            pytest.skip(f"test clip {name} not found in {path.parent} (set LIMELIGHT_DATA)")
        return path

    return find


@pytest.fixture(scope="session")
def shared_file(data_dir: Path) -> Callable[[str], Path]:
    """`shared_file(relative)` -> data_dir/relative; skips the test when it is absent."""

    def find(relative: str) -> Path:
        path = data_dir / relative
        if not path.exists():
            pytest.skip(f"shared data {relative} not found under {data_dir} (set LIMELIGHT_DATA)")
        return path

    return find
