"""Join: between the analyze Map and the render Map, the tracks that cross a segment cut are joined
with their continuation in the next segment and decided as one (`limelight.join`), as the CLI's
analysis of the whole video decides them. Reads each segment's edges (small), writes one JSON of
the joined tracks' decisions, which every segment's render applies to its plan.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers import jobs
from handlers.common import (
    client,
    env,
    gallery_key,
    join_key,
    named_errors,
    put_json,
    read_json,
    segment_edges_key,
    segment_list_key,
    video_sampling,
)
from handlers.exceptions import JobStoppedError
from limelight.join import JOIN_VERSION, SegmentEdges, join_segments
from limelight.pipeline import AnonymizeOptions
from limelight.recognizer import Gallery, Recognizer

DOWNLOADS = 16  # the segments' edges files fetched at once
logger = Logger()
tracer = Tracer()
metrics = Metrics()


@dataclass(frozen=True)
class Config:
    work_bucket: str
    jobs_table: str

    @classmethod
    def from_env(cls) -> Config:
        return cls(work_bucket=env("WORK_BUCKET"), jobs_table=env("JOBS_TABLE"))


@cache
def config() -> Config:
    return Config.from_env()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@named_errors("joining the tracks at the segment cuts")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cfg = config()
    job_id = event["job_id"]
    logger.append_keys(job_id=job_id)
    if event.get("photo"):  # one photo, no cut
        return {"job_id": job_id, "joined": 0}
    listing = read_json(cfg.work_bucket, segment_list_key(job_id))
    s3 = client("s3")
    with tempfile.TemporaryDirectory(prefix="limelight-") as tmp:
        work = Path(tmp)
        def fetch(index: int) -> SegmentEdges:
            path = work / f"{index:05d}.npz"
            s3.download_file(cfg.work_bucket, segment_edges_key(job_id, index), str(path))
            try:
                return SegmentEdges.load(path)
            finally:
                path.unlink()

        with ThreadPoolExecutor(max_workers=DOWNLOADS) as pool:  # a long video has thousands of small files
            edges = list(pool.map(fetch, [int(item["index"]) for item in listing]))
        consent = None
        if event.get("gallery"):
            s3.download_file(cfg.work_bucket, gallery_key(job_id), str(work / "gallery.npz"))
            consent = Recognizer(Gallery.load(work / "gallery.npz"))
    options = AnonymizeOptions()
    result = join_segments(edges, consent, sampling=video_sampling(options.recognition, event),
                           decisions=options.decisions)
    put_json(cfg.work_bucket, join_key(job_id), result)
    if jobs.withdraw_if_deleted(jobs.JobStore(cfg.jobs_table) if event.get("api") else None, job_id, cfg.work_bucket):
        raise JobStoppedError(f"job {job_id} was deleted while its segments' tracks were joined; nothing of it is kept")
    metrics.add_metric(name="TracksJoined", unit=MetricUnit.Count, value=result["joined"])
    logger.info("tracks joined at the segment cuts", extra={"segments": len(edges), "joined": result["joined"], "version": JOIN_VERSION})
    return {"job_id": job_id, "joined": result["joined"]}
