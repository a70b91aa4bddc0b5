"""Errors the handlers raise on purpose.

The Lambda runtime reports an unhandled exception's class name as `errorType`; Step Functions
matches it in Retry/Catch, so these names are part of the workflow's contract: keep them stable.
"""


class WorkflowError(Exception):
    """Base class; `str(error)` is one line saying what is wrong and what to do."""


class ConfigurationError(WorkflowError):
    """A required environment variable is missing or invalid (set it in template.yaml)."""


class InvalidVideoError(WorkflowError):
    """The uploaded object is not a usable video (not a video, empty, truncated, no video stream)."""


class SourceChangedError(WorkflowError):
    """The uploaded object changed or disappeared after the event: upload it again."""


class SegmentTooLongError(WorkflowError):
    """The video's keyframes are so far apart that a segment (cut on keyframes) is more than one
    anonymize invocation can process within the Lambda time limit (MaxSegmentSeconds)."""


class JobStoppedError(WorkflowError):
    """The job's execution was stopped (timed out or StopExecution) while the reassembly ran: its
    result is not published (or is withdrawn, when the stop came while it was being published)."""


class StorageExceededError(WorkflowError):
    """The upload, a segment of it or its result does not fit the function's /tmp storage
    (EphemeralStorage in template.yaml)."""


class InvalidKnownFacesError(WorkflowError):
    """The known-faces photos cannot form a consent gallery (unreadable photo, no face, group photo)."""


class SegmentFailedError(WorkflowError):
    """The engine could not anonymize one segment."""


class SmartRenderUnavailableError(WorkflowError):
    """A segment of a video rendered GOP by GOP (smart render) cannot be (a damaged GOP, a size
    change): the workflow catches it and renders every segment in full instead, since segments
    rendered the two ways would not join."""


class ReassembleError(WorkflowError):
    """The processed segments could not be joined with the original audio."""


class UnexpectedError(WorkflowError):
    """A step failed in a way LimeLight did not foresee (a library's error, a bug): the message
    names the step and the error's type and message, and the job ends in a failure report."""
