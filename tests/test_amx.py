"""XNNPACK is kept off AMX (limelight/amx.py): each case runs in its own process, since the filter
cannot be taken back once installed."""

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from limelight.amx import _cpu_has_amx
from limelight.detector import default_model_path

pytestmark = [
    pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64" or not _cpu_has_amx(),
                       reason="needs Linux on an x86-64 CPU with AMX (amx_int8 in /proc/cpuinfo)"),
    pytest.mark.skipif(not default_model_path().exists(), reason="the shipped int8 model is not built yet"),
]

FUNCTIONS = str(Path(__file__).resolve().parent.parent / "functions")

# Starts a thread first (the filter must reach threads that already run), then the detector; the
# thread asks Linux for the AMX tile state after the detector started, as XNNPACK would.
SCRIPT = textwrap.dedent("""
    import ctypes, sys, threading
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    asked, answer = threading.Event(), []
    def ask():
        asked.wait()
        answer.append((libc.syscall(158, 0x1023, 18), ctypes.get_errno()))
    thread = threading.Thread(target=ask)
    thread.start()
    from limelight.amx import keep_xnnpack_off_amx
    from limelight.detector import LiteRTRunner, default_model_path
    runner = LiteRTRunner(default_model_path(), num_threads=2)
    asked.set()
    thread.join()
    frame = np.random.default_rng(7).integers(0, 256, (1, 384, 640, 3), dtype=np.uint8)
    loc, score = runner(frame)
    np.save(sys.argv[2], np.concatenate([loc.ravel(), score.ravel()]))
    print(keep_xnnpack_off_amx(), *answer[0])
""")


def run(tmp_path, name, **env):
    out = tmp_path / f"{name}.npy"
    environment = {key: value for key, value in os.environ.items() if key != "LIMELIGHT_ALLOW_AMX"}  # see conftest.py
    done = subprocess.run([sys.executable, "-c", SCRIPT, FUNCTIONS, str(out)], capture_output=True, text=True,
                          env={**environment, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split(), np.load(out)


def test_the_detector_keeps_xnnpack_off_amx_with_the_same_results(tmp_path):
    # WHEN the detector starts in a process THEN AMX is refused to every thread, the one that
    # started before it too (EPERM = 1)
    said, off = run(tmp_path, "off")
    assert said == ["installed", "-1", "1"]
    # AND with LIMELIGHT_ALLOW_AMX=1 it is granted as before
    said, on = run(tmp_path, "on", LIMELIGHT_ALLOW_AMX="1")
    assert said == ["allowed-by-env", "0", "0"]
    # AND the int8 model gives the same numbers either way (both kernels accumulate exactly)
    np.testing.assert_array_equal(off, on)
