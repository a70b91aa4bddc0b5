"""Segment: download the upload, reject it unless it is a usable video or photo, cut a video on
keyframes (a photo is its own one segment), build the consent gallery once for every segment,
and write the segment list.

Returns only keys and small JSON (Step Functions payloads are limited to 256 KiB): the inline Map
iterates over `segments` ([{"index": i}, ...]); above INLINE_MAP_MAX_SEGMENTS that list is left
empty and the distributed Map reads the full list (frames, start times) from S3 instead.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from handlers import jobs
from handlers.common import (
    named_errors,
    UPLOAD_PHOTO_SUFFIXES,
    Source,
    client,
    download_source,
    env,
    env_number,
    gallery_key,
    local_name,
    segment_key,
    segment_list_key,
    within_storage,
)
from handlers.exceptions import InvalidKnownFacesError, InvalidVideoError, JobStoppedError, SegmentTooLongError
from limelight.errors import InputError
from limelight.pipeline import is_photo, read_image
from limelight.recognizer import PHOTO_SUFFIXES, KnownFacesError, load_gallery
from limelight.segments import Segment, split
from limelight.smart import smart_refusal
from limelight.video import EncodeOptions
from limelight.video import LAST_RESORT_CONTAINERS, NO_PTS_CONTAINERS, VideoInfo, audio_codecs, fits_container, output_container, probe

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@dataclass(frozen=True)
class Config:
    work_bucket: str
    segment_seconds: float
    max_segment_seconds: float
    known_faces_bucket: str
    known_faces_prefix: str
    inline_map_max_segments: int
    jobs_table: str

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            work_bucket=env("WORK_BUCKET"),
            segment_seconds=env_number("SEGMENT_SECONDS", float),
            max_segment_seconds=env_number("MAX_SEGMENT_SECONDS", float),
            known_faces_bucket=env("KNOWN_FACES_BUCKET"),
            known_faces_prefix=env("KNOWN_FACES_PREFIX"),
            inline_map_max_segments=env_number("INLINE_MAP_MAX_SEGMENTS", int),
            jobs_table=env("JOBS_TABLE"),
        )


@cache
def config() -> Config:
    return Config.from_env()


@tracer.capture_method
def download_known_faces(bucket: str, prefix: str, folder: Path) -> int:
    """Copy the photos under `prefix` into `folder`, keeping one sub-folder per person."""
    s3 = client("s3")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = PurePosixPath(item["Key"][len(prefix):])
            if relative.suffix.lower() not in PHOTO_SUFFIXES or any(part in ("", ".", "..") for part in relative.parts):
                continue
            target = folder.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))
            count += 1
    return count


def consent_source(cfg: Config, event: dict[str, Any]) -> tuple[str, str | None]:
    """(bucket, prefix) of the job's consent photos: an API job's own (`consent` in its input;
    a None prefix: it has none), else the bucket's shared known-faces prefix."""
    consent = event.get("consent")
    if isinstance(consent, dict):
        return consent["bucket"], consent.get("prefix")
    return cfg.known_faces_bucket, cfg.known_faces_prefix


def build_gallery(cfg: Config, job_id: str, work: Path, consent: tuple[str, str | None]) -> bool:
    """Encode the known faces once and store the gallery (.npz) for every segment of the job."""
    folder = work / "known_faces"
    folder.mkdir()
    bucket, prefix = consent
    photos = download_known_faces(bucket, prefix, folder) if prefix else 0
    if photos == 0:
        logger.info("no known faces, every face will be blurred", extra={"job_id": job_id})
        return False
    try:
        gallery = load_gallery(folder)
    except KnownFacesError as error:
        raise InvalidKnownFacesError(str(error).replace(str(folder), prefix.rstrip("/"))) from None
    path = gallery.save(work / "gallery.npz")
    client("s3").upload_file(str(path), cfg.work_bucket, gallery_key(job_id))
    logger.info(
        "consent gallery stored",
        extra={"job_id": job_id, "photos": gallery.count, "persons": len(gallery.persons), "fingerprint": gallery.fingerprint},
    )
    return True


# The picture size MaxSegmentSeconds is given for; larger pictures get proportionally less time.
_REFERENCE_PIXELS = 1920 * 1080


def segment_limit(max_seconds: float, width: int, height: int) -> float:
    """The longest segment (s) of a `width` x `height` video one anonymize invocation is given:
    `max_seconds` up to 1080p, less in proportion to the pixels above (4K: a quarter)."""
    return max_seconds * min(1.0, _REFERENCE_PIXELS / max(width * height, 1))


def check_length(segment: Segment, info: VideoInfo, limit: float, name: str) -> None:
    """SegmentTooLongError for a segment longer than `limit` seconds: keyframes that far apart
    (a browser's or a screen recorder's video may have a single one) leave a piece no invocation
    can anonymize within the Lambda time limit; the job stops at the first such cut, before it
    has spent minutes on the rest."""
    seconds = segment.frames / float(info.fps) if info.fps else 0.0
    if seconds > limit:
        raise SegmentTooLongError(
            f"{name}: the {seconds:.0f} s from {segment.start_time:.1f} s have no keyframe to cut at; the workflow cuts videos on "
            f"keyframes and gives one Lambda at most {limit:.0f} s of {info.width}x{info.height} video "
            "(MaxSegmentSeconds): re-encode it with a keyframe every few seconds (ffmpeg -i IN -c:v libx264 -crf 18 "
            "-g 60 -c:a copy OUT.mp4) or anonymize it on one machine with `limelight anonymize`"
        )


def check_publishable(video: Path, name: str) -> None:
    """InvalidVideoError, before any work, for a video whose sound the workflow cannot publish: the
    reassembly joins the segments into MP4, Matroska or QuickTime (`output_container`), and a sound
    none of them carries bit-exact (WMA, IMA ADPCM) would fail it at the very end."""
    suffix = output_container(video)
    if suffix in NO_PTS_CONTAINERS or not fits_container(video, suffix):
        codecs = ", ".join(audio_codecs(video))
        advice = ("`limelight anonymize` on one machine writes it back as Windows Media" if suffix in LAST_RESORT_CONTAINERS
                  else "convert its sound first (ffmpeg -i IN -c:v copy -c:a aac OUT.mkv)")
        raise InvalidVideoError(f"{name}: its sound ({codecs}) fits none of MP4, Matroska and QuickTime, the containers "
                                f"the workflow publishes in; {advice}")


class SegmentStore:
    """`split`'s on_segment: checks each segment's length (`check_length`), uploads it and deletes
    it, as soon as it is cut: room for one segment beside the video, not a second copy of it."""

    def __init__(self, cfg: Config, job_id: str, source: Source, info: VideoInfo) -> None:
        self.cfg, self.job_id, self.info = cfg, job_id, info
        self.name = f"s3://{source.bucket}/{source.key}"
        self.limit = segment_limit(cfg.max_segment_seconds, info.width, info.height)

    def __call__(self, segment: Segment) -> None:
        check_length(segment, self.info, self.limit, self.name)
        key = segment_key(self.job_id, segment.index, segment.path.suffix)
        client("s3").upload_file(str(segment.path), self.cfg.work_bucket, key)
        segment.path.unlink()


def photo_job(cfg: Config, job_id: str, source: Source, work: Path, photo: Path, consent: tuple[str, str | None]) -> dict[str, Any]:
    """A photo upload: checked readable, stored as the job's one segment; the Map anonymizes it
    like a segment and the reassembly publishes it in its format (HEIC as JPEG, as the CLI does)."""
    name = f"s3://{source.bucket}/{source.key}"
    if not is_photo(photo):
        raise InvalidVideoError(f"{name}: an animated {photo.suffix[1:].upper()}: the workflow takes videos and "
                                "photos; limelight anonymize takes animations")
    try:
        height, width = read_image(photo).shape[:2]
    except InputError as error:
        raise InvalidVideoError(str(error).replace(str(photo), name)) from None
    s3 = client("s3")
    s3.upload_file(str(photo), cfg.work_bucket, segment_key(job_id, 0, photo.suffix))
    has_gallery = build_gallery(cfg, job_id, work, consent)
    segment = Segment(0, photo, start_frame=0, frames=1, start_pts=0, start_time=0.0)
    s3.put_object(Bucket=cfg.work_bucket, Key=segment_list_key(job_id), Body=json.dumps([segment.as_dict()]).encode(), ContentType="application/json")
    metrics.add_metric(name="Photos", unit=MetricUnit.Count, value=1)
    logger.info("photo stored as the job's segment", extra={"width": width, "height": height})
    return {
        "job_id": job_id,
        "source": source.as_dict(),
        "segment_count": 1,
        "segments": [segment.item()],
        "segments_key": segment_list_key(job_id),
        "gallery": has_gallery,
        "picture": None,
        "segment_suffix": photo.suffix,
        "photo": {"width": width, "height": height},
    }


def render_mode(video: Path) -> dict[str, Any]:
    """How every segment of this video is rendered: "smart" (the GOPs with nothing to redact copied,
    `limelight.smart`) when the whole video allows it, else "full", with the reason; one mode for
    all, since segments rendered the two ways would not join."""
    reason = smart_refusal(video, Path(f"anonymized{output_container(video)}"), EncodeOptions(), None)
    return {"mode": "smart" if reason is None else "full", "reason": reason}


def job_fields(event: dict[str, Any]) -> dict[str, Any]:
    """What the segments' Map and the reassembly need of the job's start: an API job's flag and
    its options (`{}`: the template's)."""
    return {"api": bool(event.get("api")), "options": event.get("options") or {}}


def withdraw_if_deleted(cfg: Config, event: dict[str, Any]) -> None:
    """After writing the segments: an API job deleted meanwhile loses them, and the step stops."""
    job_id = event["job_id"]
    if jobs.withdraw_if_deleted(jobs.JobStore(cfg.jobs_table) if event.get("api") else None, job_id, cfg.work_bucket):
        raise JobStoppedError(f"job {job_id} was deleted while it was segmented; nothing of it is kept")


def record_total(cfg: Config, event: dict[str, Any], total: int) -> None:
    """An API job's progress: how many segments it has (the Map adds those done)."""
    if event.get("api"):
        jobs.JobStore(cfg.jobs_table).update(event["job_id"], [jobs.AWAITING_UPLOAD, jobs.RUNNING], set_={"segments_total": total})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@named_errors("segmenting")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cfg = config()
    job_id = event["job_id"]
    source = Source.from_dict(event["source"])
    logger.append_keys(job_id=job_id)
    s3 = client("s3")
    with tempfile.TemporaryDirectory(prefix="limelight-") as tmp, within_storage(f"s3://{source.bucket}/{source.key}"):
        work = Path(tmp)
        video = work / local_name(source.key)
        download_source(source, video)
        if video.suffix in UPLOAD_PHOTO_SUFFIXES and (video.suffix != ".gif" or is_photo(video)):  # an animated GIF is a video
            record_total(cfg, event, 1)
            result = {**photo_job(cfg, job_id, source, work, video, consent_source(cfg, event)), **job_fields(event),
                      "render": {"mode": "full", "reason": "a photo"}}
            withdraw_if_deleted(cfg, event)
            return result
        try:
            info = probe(video)
            check_publishable(video, f"s3://{source.bucket}/{source.key}")
            render = render_mode(video)
            parts_dir = work / "segments"
            parts_dir.mkdir()
            segments = split(video, parts_dir, cfg.segment_seconds, on_segment=SegmentStore(cfg, job_id, source, info))
        except InputError as error:
            # The engine's message names the local temporary file; name the upload instead.
            message = str(error).replace(str(video), f"s3://{source.bucket}/{source.key}")
            raise InvalidVideoError(message) from None
        has_gallery = build_gallery(cfg, job_id, work, consent_source(cfg, event))
    listing = [segment.as_dict() for segment in segments]
    s3.put_object(
        Bucket=cfg.work_bucket,
        Key=segment_list_key(job_id),
        Body=json.dumps(listing).encode(),
        ContentType="application/json",
    )
    record_total(cfg, event, len(segments))
    withdraw_if_deleted(cfg, event)
    metrics.add_metric(name="Segments", unit=MetricUnit.Count, value=len(segments))
    metrics.add_metric(name="VideoSeconds", unit=MetricUnit.Seconds, value=round(info.duration, 3))
    logger.info("video segmented", extra={"segments": len(segments), "frames": info.frame_count, "seconds": round(info.duration, 3)})
    return {
        **job_fields(event),
        "render": render,
        "job_id": job_id,
        "source": source.as_dict(),
        "segment_count": len(segments),
        # The Map items (`Segment.item`; the distributed Map reads the same fields from segments.json).
        "segments": [s.item() for s in segments] if len(segments) <= cfg.inline_map_max_segments else [],
        "segments_key": segment_list_key(job_id),
        # The segments' container: MP4, or QuickTime / Matroska / its own for a video MP4 cannot hold.
        "segment_suffix": segments[0].path.suffix,
        "gallery": has_gallery,
        # Size of the decoded pictures and the frame rate: every segment is encoded with them, so
        # that the pieces of a video whose size changes mid-stream, or whose last segment is too
        # short to tell its rate, still join into one stream.
        "picture": {"width": info.coded_width, "height": info.coded_height, "rate": str(info.fps) if info.fps else None},
        "video": {
            "frames": sum(segment.frames for segment in segments),
            "duration": round(info.duration, 6),
            "width": info.width,
            "height": info.height,
            "fps": round(float(info.fps), 6),
            "audio_streams": info.audio_streams,
        },
    }
