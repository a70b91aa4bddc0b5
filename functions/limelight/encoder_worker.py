"""Face encodings beside the video work: dlib in a worker process.

An encoding is ~90 ms of dlib, which holds Python's GIL all along: computed on the engine's own
thread it stalls decoding, tracking and the encoder feed while the cores wait (friends 720p with
its six consented people: recognition was 52% of the wall time, 18 fps instead of 35). A worker
process computes them while the engine goes on. The engine claims each result a fixed number of
frames after asking for it (`SamplingOptions.result_lag`), so the video it writes does not
depend on how fast the worker was: it is the same as with encodings computed in-process, which is
the fallback where no worker can be started (or where one dies).

A forked `multiprocessing.Process` with a `Pipe`: the child starts at once with dlib's models already
loaded, and AWS Lambda, which has no /dev/shm, supports pipes but not the semaphores behind Pool,
Queue or ProcessPoolExecutor. Only crops and locations go to the worker and 128 floats come back;
nothing is logged.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from limelight.errors import LimeLightError
from limelight.recognizer import encode_crop, face_crop

__all__ = ["EncodingWorkerError", "FaceEncoder"]

logger = logging.getLogger(__name__)

class EncodingWorkerError(LimeLightError):
    """dlib failed on a face in the worker process (it would have in-process too)."""


def _serve(conn: Any) -> None:
    """Worker loop: (ticket, crop, location) in, (ticket, encoding or error text) out; None stops it.

    Ctrl-C reaches the whole process group: the engine handles it, and its closing the pipe ends
    this loop, so the worker ignores it rather than print a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        ticket, crop, location = job
        try:
            conn.send((ticket, encode_crop(crop, location)))
        except Exception as error:  # reported to the engine, which raises it
            conn.send((ticket, f"{type(error).__name__}: {error}"))


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> float:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (containers, `docker
    --cpus`), which the affinity does not show."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = (cgroup / quota_file).read_text().split()
            quota = fields[0]
            period = fields[1] if period_file is None else (cgroup / period_file).read_text().strip()
            if quota not in ("max", "-1"):
                cpus = min(cpus, int(quota) / int(period))
            break
        except (OSError, IndexError, ValueError):
            continue
    return cpus


class FaceEncoder:
    """Encodes faces asynchronously; `result(ticket)` returns them in the order they were submitted.

    With `processes` False, on a single CPU, or where the platform cannot fork, every encoding is
    computed at `submit`, as is what a dead worker still owed.
    """

    def __init__(self, processes: bool = True, max_outstanding: int = 16):
        # A worker only helps with a second CPU to run on (a Lambda function of 1,769 MB has one).
        self._want_process = processes and "fork" in multiprocessing.get_all_start_methods() and usable_cpus() >= 2
        self._max_outstanding = max_outstanding
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Any = None
        self._next = 0
        self._done: dict[int, np.ndarray] = {}
        self._sent: dict[int, tuple[np.ndarray, tuple[int, int, int, int]]] = {}  # until answered

    @property
    def in_process(self) -> bool:
        """True once encodings are computed in this process (by choice or after a failure)."""
        return not self._want_process

    def submit(self, frame: Any, box: np.ndarray, turns: int = 0, sar: float = 1.0) -> int | None:
        """Ask for the encoding of the face in `box`; None (nothing asked) for a face too small to
        recognise (`face_crop`; `turns` quarter turns show the frame upright, `sar` is its sample
        aspect ratio)."""
        job = face_crop(frame, box, turns=turns, sar=sar)
        return None if job is None else self.submit_crop(job)

    def submit_crop(self, job: tuple[np.ndarray, tuple[int, int, int, int]]) -> int:
        """Ask for the encoding of a face already cut out (`face_crop`'s crop and location)."""
        ticket, self._next = self._next, self._next + 1
        if not self._want_process or not self.start():
            self._done[ticket] = encode_crop(*job)
            return ticket
        while len(self._sent) >= self._max_outstanding:  # bounded: neither side of the pipe can fill up
            self._receive()
        self._sent[ticket] = job
        try:
            self._conn.send((ticket, *job))
        except (OSError, ValueError):
            self._fail("pipe closed while sending")
        return ticket

    def result(self, ticket: int) -> np.ndarray:
        """The encoding of `ticket` (waits for it); each ticket is claimed once."""
        while ticket not in self._done:
            if ticket not in self._sent:
                raise KeyError(f"face-encoding ticket {ticket} was never submitted or already claimed")
            self._receive()
        return self._done.pop(ticket)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
            self._process = None

    def __enter__(self) -> "FaceEncoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> bool:
        """Start the worker now (else at the first `submit`); False where encodings stay in-process."""
        if self._process is not None:
            return True
        if not self._want_process:
            return False
        try:
            ctx = multiprocessing.get_context("fork")
            parent, child = ctx.Pipe(duplex=True)
            process = ctx.Process(target=_serve, args=(child,), name="limelight-face-encoder", daemon=True)
            process.start()
            child.close()
        except OSError as error:
            logger.warning("face-encoding worker not started; encoding in-process", extra={"reason": str(error)})
            self._want_process = False
            return False
        self._process, self._conn = process, parent
        return True

    def _receive(self) -> None:
        try:
            ticket, value = self._conn.recv()
        except (EOFError, OSError):
            self._fail("pipe closed while receiving")
            return
        self._sent.pop(ticket, None)
        if isinstance(value, str):
            raise EncodingWorkerError(f"face encoding failed in the worker process: {value}")
        self._done[ticket] = value

    def _fail(self, why: str) -> None:
        """The worker is gone: compute what it still owed here, and everything from now on."""
        logger.warning("face-encoding worker stopped; encoding in-process", extra={"reason": why})
        self._want_process = False
        for ticket, job in sorted(self._sent.items()):
            self._done[ticket] = encode_crop(*job)
        self._sent.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.kill()
            self._process.join(timeout=5)
            self._process = None
