"""Exceptions raised by LimeLight.

Every error the engine raises on purpose derives from `LimeLightError`, so callers (CLI, cloud
handler) can catch one class and show its message: a single line naming the file and the problem.
"""


class LimeLightError(Exception):
    """Base class of all LimeLight errors; `str(error)` is one line fit for an end user."""


class InputError(LimeLightError):
    """The input cannot be used: missing, empty, not a video, truncated, or without a video stream."""


class OutputError(LimeLightError):
    """The output cannot be written: missing or read-only folder, unsupported container, disk full."""
