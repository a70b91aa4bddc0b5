"""Keep LiteRT's XNNPACK on its AVX-512 VNNI int8 kernels on CPUs that also have AMX.

On a CPU with AMX (Intel Sapphire Rapids and later: `amx_int8` in /proc/cpuinfo) XNNPACK runs every
int8 convolution on AMX tiles, which compute 64 output channels for 16 pixels at a time. The
detector's early layers have 3-16 channels at high resolution, where a tile does 4-20 times the
useful work: a 1x1 convolution of 8 channels over 192x320 took 1.04 ms on AMX and 0.20 ms on VNNI
(float32: 0.19 ms, one thread), and the whole int8 detector at 640x384 7.6 -> 5.0 ms on two
threads, 13.6 -> 8.2 ms on one, when AMX is left out (model_opt/README.md, "Latency"). XNNPACK offers no setting for it; it uses AMX only when Linux
grants the process the AMX tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), so
`keep_xnnpack_off_amx` installs a seccomp filter that answers that one request with EPERM, for all
of the process's threads, before the first interpreter starts. XNNPACK then logs that AMX is not
allowed and uses VNNI. Nothing else changes: every other system call passes, float models never
used AMX, and the int8 results are the same integers (both kernels accumulate exactly).

The filter cannot be removed from a process (seccomp's rule), and a process that already holds the
AMX state keeps it; it is installed once, only on Linux x86-64, only when the CPU has AMX, and not
at all when `LIMELIGHT_ALLOW_AMX=1` (for a host program that uses AMX elsewhere). Where the kernel
refuses the filter (an old kernel, a sandbox without seccomp), the detector runs as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct
import threading
from pathlib import Path

__all__ = ["keep_xnnpack_off_amx"]

logger = logging.getLogger(__name__)

_ARCH_PRCTL = 158  # x86-64 system call numbers
_SECCOMP = 317
_ARCH_REQ_XCOMP_PERM = 0x1023
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1  # every thread of the process, not only the caller
_RET_ALLOW = 0x7FFF0000
_RET_EPERM = 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}: (code, jt, jf, k).
_LD, _JEQ, _RET = 0x20, 0x15, 0x06
_FILTER = (
    (_LD, 0, 0, 4),  # arch
    (_JEQ, 0, 5, _AUDIT_ARCH_X86_64),
    (_LD, 0, 0, 0),  # system call number
    (_JEQ, 0, 3, _ARCH_PRCTL),
    (_LD, 0, 0, 16),  # low half of the first argument
    (_JEQ, 0, 1, _ARCH_REQ_XCOMP_PERM),
    (_RET, 0, 0, _RET_EPERM),
    (_RET, 0, 0, _RET_ALLOW),
)

_lock = threading.Lock()
_state: str | None = None  # what the one attempt did: "installed", or why not


def _cpu_has_amx() -> bool:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return "amx_int8" in line.split()
    except OSError:
        pass
    return False


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def keep_xnnpack_off_amx() -> str:
    """Install the filter (once per process) unless it does not apply; returns what happened:
    "installed", or "not-linux-x86-64", "no-amx", "allowed-by-env", "refused: ..."."""
    global _state
    with _lock:
        if _state is None:
            _state = _install()
            logger.debug("xnnpack amx filter", extra={"state": _state})
        return _state


def _install() -> str:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return "not-linux-x86-64"
    if os.environ.get("LIMELIGHT_ALLOW_AMX") == "1":
        return "allowed-by-env"
    if not _cpu_has_amx():
        return "no-amx"
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in _FILTER))
    program = _Program(len(_FILTER), ctypes.cast(code, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"refused: no_new_privs ({os.strerror(ctypes.get_errno())})"
    if libc.syscall(_SECCOMP, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(program)) != 0:
        return f"refused: seccomp ({os.strerror(ctypes.get_errno())})"
    return "installed"
