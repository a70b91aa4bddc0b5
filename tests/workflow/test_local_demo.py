"""`make cloud-demo` (python -m infra.local): the whole workflow on this machine, saved as published."""

from __future__ import annotations

import numpy as np
from PIL import Image

from infra.local import main
from tests.media import frame_times, phone_3gp


def test_cloud_demo_saves_a_phones_clip_in_the_container_it_was_published_in(tmp_path, capsys):
    # GIVEN a phone's 3GP (AMR speech, which MP4 cannot carry) and OUT named .mp4
    source = phone_3gp(tmp_path / "VID0001.3gp")
    # WHEN the local workflow runs (it saved QuickTime bytes under out.mp4)
    assert main([str(source), "--out", str(tmp_path / "out.mp4")]) == 0
    # THEN the result is out.mov, and the note says so
    assert not (tmp_path / "out.mp4").exists() and frame_times(tmp_path / "out.mov") == frame_times(source)
    printed = capsys.readouterr().out
    assert f"saved as {tmp_path / 'out.mov'}" in printed and "15 frames, 1 segments" in printed


def test_cloud_demo_takes_a_photo(tmp_path, capsys):
    # GIVEN a photo (its summary failed: "KeyError: 'segments'")
    source = tmp_path / "still.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(source)
    # WHEN the local workflow runs, THEN the photo is saved and summarised as one
    assert main([str(source), "--out", str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").is_file() and "(photo, 0 faces" in capsys.readouterr().out
