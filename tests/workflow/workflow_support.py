"""Helpers of the workflow tests: uploads shaped by the sample events, running a job, media checks."""

from __future__ import annotations

import copy
import json
import math
from fractions import Fraction
from pathlib import Path
from urllib.parse import unquote_plus

import av
import numpy as np

from infra.local import JobResult, LocalCloud, read_event
from tests.media import audio_packets, frame_times


def event_for_upload(cloud: LocalCloud, event_name: str, body: bytes, key: str | None = None) -> dict:
    """The sample event `event_name` (infra/events/) after uploading `body` under its key.

    The first record's URL-encoded key names the upload (or `key`, for a second upload); every
    record gets the ETag and version id S3 gave the upload, as a real notification carries.
    """
    event = copy.deepcopy(read_event(event_name))
    bucket = event["Records"][0]["s3"]["bucket"]["name"]
    decoded = key or unquote_plus(event["Records"][0]["s3"]["object"]["key"])
    put = cloud.s3.put_object(Bucket=bucket, Key=decoded, Body=body)
    for record in event["Records"]:
        obj = record["s3"]["object"]
        if key is not None:
            obj["key"] = key
        obj.update({"eTag": put["ETag"].strip('"'), "versionId": put["VersionId"], "size": len(body)})
    return event


def run_job(cloud: LocalCloud, event: dict) -> JobResult:
    """Deliver the event to the start function and wait for the one execution it starts."""
    started = cloud.start(event)
    assert len(started["started"]) == 1, started
    return cloud.wait(started["started"][0], timeout=300)


def download(cloud: LocalCloud, result: JobResult, folder: Path) -> tuple[Path, dict]:
    """The published video (in the container it was published in) and its report (parsed)."""
    video, report = cloud.download_result(result, folder / f"{result.job_id}.mp4")
    return video, json.loads(report.read_text())


def av_offset(path: Path) -> Fraction:
    """Video start minus audio start (s)."""
    with av.open(str(path)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        return video.start_time * video.time_base - audio.start_time * audio.time_base


def assert_same_timing_and_audio(result: Path, original: Path) -> None:
    assert frame_times(result) == frame_times(original)
    assert audio_packets(result) == audio_packets(original)
    assert av_offset(result) == av_offset(original)


def write_synthetic_clip(path: Path) -> Path:
    """3.6 s, 96x64, 25 fps H.264 (a keyframe every second) with an AAC track; no faces."""
    rate = Fraction(25)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.time_base = video.codec_context.time_base = 1 / rate
        video.options = {"preset": "veryfast", "g": "25", "keyint_min": "25", "sc_threshold": "0"}
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "mono"
        for i in range(90):
            rgb = np.zeros((64, 96, 3), np.uint8)
            rgb[..., 0] = (np.arange(96) * 2 + 5 * i) % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        t = np.arange(1024, dtype=np.float32) / 48000
        for k in range(math.ceil(3.6 * 48000 / 1024)):
            tone = (0.2 * np.sin(2 * np.pi * 440 * (t + k * 1024 / 48000)))[None, :]
            chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, k * 1024
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    return path
