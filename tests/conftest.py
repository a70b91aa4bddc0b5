"""Shared pytest fixtures: where the (read-only, never copied) test data lives."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


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
