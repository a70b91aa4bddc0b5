"""What native libraries (libjpeg inside OpenCV, FFmpeg) print straight to the process's stderr.

Their lines bypass Python, so they would reach the user's terminal raw, breaking the one-line rule.
`captured_stderr` catches them at the file descriptor so that the caller can turn them into
LimeLight's own error (a truncated JPEG) or drop them."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["captured_stderr"]


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """While inside, file descriptor 2 goes to a scratch file; on leaving, its lines are added to
    the yielded list. Meant for short native calls on one thread (it captures the whole process)."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                lines.extend(line for line in sink.read().decode(errors="replace").splitlines() if line.strip())
    finally:
        os.close(saved)
