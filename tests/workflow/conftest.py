"""Fixtures of the workflow tier: the real ASL executed by moto, the real handlers in-process.

Powertools reads its settings when a handler module is imported, so the template's Globals are
put into the environment before any test module imports one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.local import LocalCloud
from infra.template import load

for _name, _value in load()["Globals"]["Function"]["Environment"]["Variables"].items():
    os.environ.setdefault(_name, str(_value))

from workflow_support import write_synthetic_clip  # noqa: E402

# Short segments so that the Map runs several iterations on short clips; the least
# MaxSegmentSeconds, so that a clip of a single keyframe needs only be 12 s long.
SEGMENT_SECONDS = "2"
MAX_SEGMENT_SECONDS = "10"


@pytest.fixture(scope="module")
def cloud():
    """moto server with the stack of template.yaml deployed and the handlers served in-process."""
    with LocalCloud.running({"SegmentSeconds": SEGMENT_SECONDS, "MaxSegmentSeconds": MAX_SEGMENT_SECONDS}) as running:
        yield running


@pytest.fixture(scope="session")
def synthetic_clip(tmp_path_factory) -> Path:
    return write_synthetic_clip(tmp_path_factory.mktemp("synthetic") / "synthetic.mp4")
