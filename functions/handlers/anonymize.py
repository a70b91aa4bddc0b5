"""One segment of a job, in one of the engine's two passes (`phase` in the Map item):

- "analyze" (the analyze Map): the segment's plan (tracks, boxes, decisions) and its edges (the
  tracks near its ends with their samples, for the join step: `limelight.join`);
- "render" (the render Map, after the join): the segment rendered from its plan with the joined
  tracks' decisions, and its audit report;
- absent: both in one invocation, with no join (`sam local invoke` of a single segment).

Keys depend only on (job_id, index), so a retry overwrites. The detector (LiteRT interpreter) is
built once per container; the recognizer once per gallery.
"""

from __future__ import annotations

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
    join_key,
    put_json,
    read_json,
    segment_edges_key,
    segment_plan_key,
    video_sampling,
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
from limelight.join import SegmentEdges, apply_join
from limelight.pipeline import AnonymizeOptions, Anonymizer
from limelight.plan import Plan
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


PHASES = ("analyze", "render", "anonymize")


def engine(options: AnonymizeOptions, event: dict[str, Any], consent: Recognizer | None, photo: bool) -> Anonymizer:
    """The engine for this job's segments (`options`: the job's), the same in both passes (so that
    the render decodes the frames the analysis numbered)."""
    if (event.get("render") or {}).get("mode") == "smart" and not photo:
        # The whole video's GOPs are closed H.264 and its segments start on keyframes: this one is
        # rendered GOP by GOP as it is (no pre-roll, its own size and rate), like every other.
        rate = (event.get("picture") or {}).get("rate")
        # (not a whole file: its damage is judged with the whole video's, as a full-render segment's)
        encode = replace(options.encode, whole_file=False, **({"rate": Fraction(rate)} if rate else {}))
        return Anonymizer(detector(), consent, replace(options, encode=encode, smart_segment=True))
    return Anonymizer(detector(), consent, segment_options(options, event.get("picture"), event.get("skip_before")))


def analyze(cfg: Config, event: dict[str, Any], engine: Anonymizer, src: Path, work: Path) -> dict[str, Any]:
    """The analyze pass: the segment's plan and edges stored for the join and the render."""
    job_id, index = event["job_id"], int(event["index"])
    plan = engine.analyze(src)
    put_json(cfg.work_bucket, segment_plan_key(job_id, index), plan.as_dict())
    edges = SegmentEdges.of(plan, video_sampling(engine.options.recognition, event)).save(work / "edges.npz")
    client("s3").upload_file(str(edges), cfg.work_bucket, segment_edges_key(job_id, index))
    return {"job_id": job_id, "index": index, "frames": plan.input["frames"], "tracks": len(plan.tracks)}


def joined_plan(cfg: Config, event: dict[str, Any]) -> Plan:
    """The segment's plan with the decisions of its tracks that cross a cut (the join step's)."""
    job_id, index = event["job_id"], int(event["index"])
    plan = Plan.from_dict(read_json(cfg.work_bucket, segment_plan_key(job_id, index)))
    joins = read_json(cfg.work_bucket, join_key(job_id))
    return apply_join(plan, joins["segments"].get(str(index)))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@named_errors("anonymizing a segment")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cfg = config()
    job_id, index = event["job_id"], int(event["index"])
    phase = event.get("phase") or "anonymize"
    if phase not in PHASES:
        raise SegmentFailedError(f"segment {index} of job {job_id}: unknown phase {phase!r} (one of {', '.join(PHASES)})")
    logger.append_keys(job_id=job_id, segment=index, phase=phase)
    s3 = client("s3")
    store = jobs.JobStore(cfg.jobs_table) if event.get("api") else None
    with tempfile.TemporaryDirectory(prefix="limelight-") as tmp, within_storage(f"segment {index} of job {job_id}"):
        work = Path(tmp)
        suffix = event.get("segment_suffix", SEGMENT_SUFFIX)
        key = segment_key(job_id, index, suffix)  # a ValueError for a container split never writes
        photo = suffix in UPLOAD_PHOTO_SUFFIXES  # a photo job: its one segment is the photo
        if phase == "analyze" and photo:
            return {"job_id": job_id, "index": index, "photo": True}  # a photo is analyzed as it is rendered
        src = work / f"segment{suffix}"
        dst = work / f"anonymized{photo_output_suffix(suffix) if photo else '.mp4'}"
        s3.download_file(cfg.work_bucket, key, str(src))
        consent = recognizer(cfg, job_id, work) if event.get("gallery") else None
        options = job_options(cfg.options, event.get("options"))
        anonymizer = engine(options, event, consent, photo)
        try:
            if phase == "analyze":
                result = analyze(cfg, event, anonymizer, src, work)
            elif photo:
                report = anonymizer.image(src, dst)
            elif phase == "render":
                report = anonymizer.render(src, dst, joined_plan(cfg, event))
            else:
                report = anonymizer.video(src, dst)
        except SmartRenderError as error:
            raise SmartRenderUnavailableError(f"segment {index} of job {job_id}: {error}; every segment is rendered in full") from None
        except LimeLightError as error:
            raise SegmentFailedError(f"segment {index} of job {job_id}: {error}") from None
        if phase == "analyze":
            if jobs.withdraw_if_deleted(store, job_id, cfg.work_bucket):
                logger.info("job deleted meanwhile, its intermediates withdrawn")
                return {**result, "deleted": True}
            if store is not None:
                store.update(job_id, [jobs.AWAITING_UPLOAD, jobs.RUNNING], add={"segments_analyzed": {f"{index:05d}"}})
            metrics.add_metric(name="FramesAnalyzed", unit=MetricUnit.Count, value=result["frames"])
            logger.info("segment analyzed", extra={"frames": result["frames"], "tracks": result["tracks"]})
            return result
        if store is not None and store.is_deleted(job_id):
            # Erased while this segment ran (its execution was stopped): write nothing of it.
            logger.info("job deleted meanwhile, segment not stored")
            return {"job_id": job_id, "index": index, "deleted": True}
        s3.upload_file(str(dst), cfg.work_bucket, processed_key(job_id, index, dst.suffix))
    part = {"settings": options.settings(), "model": model_metadata(), "file": report.as_dict()}
    put_json(cfg.work_bucket, segment_report_key(job_id, index), part)
    if jobs.withdraw_if_deleted(store, job_id, cfg.work_bucket):
        logger.info("job deleted meanwhile, its intermediates withdrawn")
        return {"job_id": job_id, "index": index, "deleted": True}
    if store is not None:
        store.update(job_id, [jobs.AWAITING_UPLOAD, jobs.RUNNING], add={"segments_done": {f"{index:05d}"}})
    metrics.add_metric(name="FramesAnonymized", unit=MetricUnit.Count, value=report.frames)
    metrics.add_metric(name="SegmentFps", unit=MetricUnit.CountPerSecond, value=round(report.fps, 2))
    logger.info("segment anonymized", extra={"frames": report.frames, "faces": report.faces, "kept": report.kept, "fps": round(report.fps, 2)})
    return {"job_id": job_id, "index": index, "frames": report.frames, "faces": report.faces, "kept": report.kept}
