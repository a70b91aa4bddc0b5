"""Anonymize one segment: download it (and the job's consent gallery), run the engine, upload the
result and its audit report under keys that depend only on (job_id, index), so a retry overwrites.

The detector (LiteRT interpreter) is built once per container; the recognizer once per gallery.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers import jobs
from handlers.common import (
    named_errors,
    SEGMENT_SUFFIX,
    UPLOAD_PHOTO_SUFFIXES,
    client,
    env,
    gallery_key,
    processed_key,
    segment_key,
    segment_report_key,
    within_storage,
)
from handlers.exceptions import ConfigurationError, SegmentFailedError, SmartRenderUnavailableError
from limelight.detector import Detector, model_metadata
from limelight.errors import LimeLightError
from limelight.formats import photo_output_suffix
from limelight.pipeline import AnonymizeOptions, Anonymizer
from limelight.recognizer import Gallery, Recognizer
from limelight.redact import Mode, RedactError, RedactOptions
from limelight.smart import SmartRenderError

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@dataclass(frozen=True)
class Config:
    work_bucket: str
    options: AnonymizeOptions
    jobs_table: str

    @classmethod
    def from_env(cls) -> Config:
        mode = env("REDACT_MODE")
        try:
            redact = RedactOptions(mode=Mode(mode))
        except ValueError:
            choices = ", ".join(m.value for m in Mode)
            raise ConfigurationError(f"environment variable REDACT_MODE={mode!r} must be one of {choices}") from None
        return cls(work_bucket=env("WORK_BUCKET"), options=AnonymizeOptions(redact=redact), jobs_table=env("JOBS_TABLE"))


@cache
def config() -> Config:
    return Config.from_env()


@cache
def detector() -> Detector:
    """The int8 face detector baked into the image; the same settings as `limelight anonymize`."""
    return Detector()


_recognizers: dict[str, Recognizer] = {}


def recognizer(cfg: Config, job_id: str, work: Path) -> Recognizer:
    """The job's consent recognizer (a warm container keeps the last job's)."""
    if job_id not in _recognizers:
        path = work / "gallery.npz"
        client("s3").download_file(cfg.work_bucket, gallery_key(job_id), str(path))
        _recognizers.clear()
        _recognizers[job_id] = Recognizer(Gallery.load(path))
    return _recognizers[job_id]


def segment_options(options: AnonymizeOptions, picture: dict[str, int] | None, skip_before: int | None = None) -> AnonymizeOptions:
    """`options` with the whole video's picture size and frame rate (the segment handler's
    `picture`), so that a segment cut after the video changed size is scaled to the size the others
    have and a short last segment is encoded at the rate the others are; and, for a
    segment with a pre-roll, the timestamp its own frames start at (`Segment.skip_before`: the
    frames before it are the previous segment's, decoded only as references). A segment is not a
    whole file: a frame lost at its end is stood in for, and its damage is judged with the whole
    video's by the reassembly (`EncodeOptions.whole_file`)."""
    encode = replace(options.encode, whole_file=False)
    if picture:
        encode = replace(encode, size=(int(picture["width"]), int(picture["height"])))
        if picture.get("rate"):
            encode = replace(encode, rate=Fraction(picture["rate"]))
    if skip_before is not None:
        encode = replace(encode, start_pts=int(skip_before))
    return replace(options, encode=encode)


def job_options(options: AnonymizeOptions, chosen: dict[str, Any] | None) -> AnonymizeOptions:
    """`options` with an API job's own redaction (mode, shape, scale; checked by the API)."""
    if not chosen:
        return options
    try:
        redact = RedactOptions(**{**asdict(options.redact), **chosen})
    except (TypeError, RedactError) as error:
        raise SegmentFailedError(f"the job's options {chosen}: {error}") from None
    return replace(options, redact=redact)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@named_errors("anonymizing a segment")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cfg = config()
    job_id, index = event["job_id"], int(event["index"])
    logger.append_keys(job_id=job_id, segment=index)
    s3 = client("s3")
    with tempfile.TemporaryDirectory(prefix="limelight-") as tmp, within_storage(f"segment {index} of job {job_id}"):
        work = Path(tmp)
        suffix = event.get("segment_suffix", SEGMENT_SUFFIX)
        key = segment_key(job_id, index, suffix)  # a ValueError for a container split never writes
        photo = suffix in UPLOAD_PHOTO_SUFFIXES  # a photo job: its one segment is the photo
        src = work / f"segment{suffix}"
        dst = work / f"anonymized{photo_output_suffix(suffix) if photo else '.mp4'}"
        s3.download_file(cfg.work_bucket, key, str(src))
        consent = recognizer(cfg, job_id, work) if event.get("gallery") else None
        options = job_options(cfg.options, event.get("options"))
        if (event.get("render") or {}).get("mode") == "smart" and not photo:
            # The whole video's GOPs are closed H.264 and its segments start on keyframes: this one is
            # rendered GOP by GOP as it is (no pre-roll, its own size and rate), like every other.
            rate = (event.get("picture") or {}).get("rate")
            # (not a whole file: its damage is judged with the whole video's, as a full-render segment's)
            encode = replace(options.encode, whole_file=False, **({"rate": Fraction(rate)} if rate else {}))
            engine = Anonymizer(detector(), consent, replace(options, encode=encode, smart_segment=True))
        else:
            engine = Anonymizer(detector(), consent, segment_options(options, event.get("picture"), event.get("skip_before")))
        try:
            report = engine.image(src, dst) if photo else engine.video(src, dst)
        except SmartRenderError as error:
            raise SmartRenderUnavailableError(f"segment {index} of job {job_id}: {error}; every segment is rendered in full") from None
        except LimeLightError as error:
            raise SegmentFailedError(f"segment {index} of job {job_id}: {error}") from None
        store = jobs.JobStore(cfg.jobs_table) if event.get("api") else None
        if store is not None and store.is_deleted(job_id):
            # Erased while this segment ran (its execution was stopped): write nothing of it.
            logger.info("job deleted meanwhile, segment not stored")
            return {"job_id": job_id, "index": index, "deleted": True}
        s3.upload_file(str(dst), cfg.work_bucket, processed_key(job_id, index, dst.suffix))
    part = {"settings": options.settings(), "model": model_metadata(), "file": report.as_dict()}
    s3.put_object(
        Bucket=cfg.work_bucket,
        Key=segment_report_key(job_id, index),
        Body=json.dumps(part, separators=(",", ":")).encode(),
        ContentType="application/json",
    )
    if jobs.withdraw_if_deleted(store, job_id, cfg.work_bucket):
        logger.info("job deleted meanwhile, its intermediates withdrawn")
        return {"job_id": job_id, "index": index, "deleted": True}
    if store is not None:
        store.update(job_id, [jobs.AWAITING_UPLOAD, jobs.RUNNING], add={"segments_done": {f"{index:05d}"}})
    metrics.add_metric(name="FramesAnonymized", unit=MetricUnit.Count, value=report.frames)
    metrics.add_metric(name="SegmentFps", unit=MetricUnit.CountPerSecond, value=round(report.fps, 2))
    logger.info("segment anonymized", extra={"frames": report.frames, "faces": report.faces, "kept": report.kept, "fps": round(report.fps, 2)})
    return {"job_id": job_id, "index": index, "frames": report.frames, "faces": report.faces, "kept": report.kept}
