"""Reassemble: join the anonymized segments with the original's audio (bit-exact, in sync) and
publish the video and the merged audit report, once, at the end of the job.

The output goes to the output bucket, which sends no events, under `<OUTPUT_PREFIX><job_id>/`:
the published result can never start the workflow again. The video is written first and the
report last, so a report in the output bucket means a complete result.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers import jobs
from handlers.common import (
    named_errors,
    Source,
    client,
    download_source,
    env,
    execution_arn,
    local_name,
    output_keys,
    processed_key,
    segment_list_key,
    read_json,
    segment_report_key,
    within_storage,
)
from handlers.exceptions import JobStoppedError, ReassembleError
from limelight.errors import LimeLightError
from limelight.formats import photo_output_suffix
from limelight.pipeline import is_photo
from limelight.segments import join, merge_reports
from limelight.video import DecodeDamage, check_video_damage, output_container

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@dataclass(frozen=True)
class Config:
    work_bucket: str
    output_bucket: str
    output_prefix: str
    state_machine_arn: str
    jobs_table: str

    @classmethod
    def from_env(cls) -> Config:
        return cls(env("WORK_BUCKET"), env("OUTPUT_BUCKET"), env("OUTPUT_PREFIX"), env("STATE_MACHINE_ARN"), env("JOBS_TABLE"))


# An API job's result expires with its record (the output bucket's lifecycle rule on this tag);
# a bucket job's result stays until someone deletes it, as before.
RETENTION_TAG = "limelight-retention=api-job"


@cache
def config() -> Config:
    return Config.from_env()


def merged_report(cfg: Config, job_id: str, source: Source, listing: list[dict[str, Any]], video_key: str,
                  dropped_streams: tuple[str, ...] = (), damage: DecodeDamage | None = None) -> dict[str, Any]:
    """The job's audit report in the CLI's format, whole-video frame numbers, S3 names."""
    parts = [read_json(cfg.work_bucket, segment_report_key(job_id, s["index"])) for s in listing]
    merged = merge_reports(
        [(s["start_frame"], part["file"]) for s, part in zip(listing, parts)],
        input_name=f"s3://{source.bucket}/{source.key}",
        output_name=f"s3://{cfg.output_bucket}/{video_key}",
        dropped_streams=dropped_streams,
        damage=damage,
    )
    return {
        "limelight_report": 1,
        "job": {"job_id": job_id, "source": source.as_dict(), "segments": len(listing)},
        "settings": parts[0]["settings"],
        "model": parts[0]["model"],
        "files": [merged],
    }


def photo_report(cfg: Config, job_id: str, source: Source, key: str) -> dict[str, Any]:
    """A photo job's audit report: the CLI's report of the photo, with S3 names."""
    part = read_json(cfg.work_bucket, segment_report_key(job_id, 0))
    photo = {**part["file"], "input": f"s3://{source.bucket}/{source.key}", "output": f"s3://{cfg.output_bucket}/{key}"}
    return {
        "limelight_report": 1,
        "job": {"job_id": job_id, "source": source.as_dict(), "segments": 1},
        "settings": part["settings"],
        "model": part["model"],
        "files": [photo],
    }


def ensure_running(cfg: Config, job_id: str, step: str) -> None:
    """JobStoppedError unless the job's execution still runs: a Lambda invocation is not stopped
    with its execution (a timeout, StopExecution), and the failure report the execution's end
    brings must stay the job's only outcome."""
    sfn = client("stepfunctions")
    try:
        status = sfn.describe_execution(executionArn=execution_arn(cfg.state_machine_arn, job_id))["status"]
    except sfn.exceptions.ExecutionDoesNotExist:
        status = "nowhere (no execution of it exists)"  # an invocation outside the workflow (sam local invoke)
    if status != "RUNNING":
        raise JobStoppedError(f"job {job_id}: its execution ended {status} {step}; nothing is published")


def fetch_parts(cfg: Config, job_id: str, listing: list[dict[str, Any]], work: Path) -> Iterator[Path]:
    """The anonymized segments, each downloaded when `join` asks for it, the one before deleted
    (read to its end by then): room for one segment beside the original and the output."""
    previous: Path | None = None
    for segment in listing:
        part = work / f"{segment['index']:05d}.mp4"
        client("s3").download_file(cfg.work_bucket, processed_key(job_id, segment["index"]), str(part))
        if previous is not None:
            previous.unlink()
        previous = part
        yield part


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@named_errors("reassembling")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cfg = config()
    job_id = event["job_id"]
    source = Source.from_dict(event["source"])
    logger.append_keys(job_id=job_id)
    listing = read_json(cfg.work_bucket, segment_list_key(job_id))
    s3 = client("s3")
    with tempfile.TemporaryDirectory(prefix="limelight-") as tmp, within_storage(f"job {job_id} (s3://{source.bucket}/{source.key})"):
        work = Path(tmp)
        original = work / local_name(source.key)
        download_source(source, original)
        if is_photo(original):
            # A photo job: its one segment is the anonymized photo, in the format the CLI writes.
            suffix = photo_output_suffix(original.suffix)
            video_key, report_key = output_keys(cfg.output_prefix, job_id, source.key, suffix)
            output = work / f"output{suffix}"
            s3.download_file(cfg.work_bucket, processed_key(job_id, 0, suffix), str(output))
            report, frames = photo_report(cfg, job_id, source, video_key), 1
        else:
            # The CLI's container: the upload's own, else MP4, or MKV / MOV when MP4 cannot carry
            # its audio bit-exact (AMR of a phone's 3GP, µ-law of a camera's AVI).
            video_key, report_key = output_keys(cfg.output_prefix, job_id, source.key, output_container(original))
            output = work / f"output{Path(video_key).suffix}"
            try:
                stats = join(fetch_parts(cfg, job_id, listing, work), original, output)
            except LimeLightError as error:
                raise ReassembleError(f"job {job_id}: {error}") from None
            report = merged_report(cfg, job_id, source, listing, video_key, stats.dropped_streams, stats.damage)
            frames = stats.frames
            damage = report["files"][0]["damage"]
            try:
                # The segments' damage, judged as the CLI judges a whole file's.
                check_video_damage(f"s3://{source.bucket}/{source.key}", damage["video_packets"] if damage else 0, frames)
            except LimeLightError as error:
                raise ReassembleError(f"job {job_id}: {error}") from None
        ensure_running(cfg, job_id, "before its result was published")
        api = bool(event.get("api"))
        s3.upload_file(str(output), cfg.output_bucket, video_key, ExtraArgs={"Tagging": RETENTION_TAG} if api else None)
    s3.put_object(
        Bucket=cfg.output_bucket,
        Key=report_key,
        Body=json.dumps(report, separators=(",", ":")).encode(),
        ContentType="application/json",
        **({"Tagging": RETENTION_TAG} if api else {}),
    )
    try:
        ensure_running(cfg, job_id, "while its result was published")
    except JobStoppedError:
        for key in (video_key, report_key):  # withdrawn: the stop's failure report may already be there
            s3.delete_object(Bucket=cfg.output_bucket, Key=key)
        raise
    merged = report["files"][0]
    faces = {"kept": int(merged["kept"]), "blurred": int(merged["blurred"])}
    result = {"bucket": cfg.output_bucket, "video_key": video_key, "report_key": report_key}
    if api and not jobs.JobStore(cfg.jobs_table).update(job_id, [jobs.AWAITING_UPLOAD, jobs.RUNNING],
                                                        set_={"status": jobs.SUCCEEDED, "result": result, "faces": faces, "frames": frames}):
        # Deleted while it was published: erasure wins, the result goes too.
        for key in (video_key, report_key):
            s3.delete_object(Bucket=cfg.output_bucket, Key=key)
        raise JobStoppedError(f"job {job_id} was deleted while its result was published; nothing is kept")
    jobs.emit(jobs.JOB_SUCCEEDED, {"job_id": job_id, "status": jobs.SUCCEEDED, "source": {"bucket": source.bucket, "key": source.key},
                                   "output": result, "frames": frames, "faces": faces})
    metrics.add_metric(name="JobsCompleted", unit=MetricUnit.Count, value=1)
    logger.info("result published", extra={"frames": frames, "faces": merged["faces"], "kept": merged["kept"], "video_key": video_key})
    return {
        "job_id": job_id,
        "output": {"bucket": cfg.output_bucket, "video_key": video_key, "report_key": report_key},
        "frames": frames,
        "faces": merged["faces"],
        "kept": merged["kept"],
    }
