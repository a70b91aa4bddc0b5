"""The job API's records (DynamoDB), its S3 keys, the jobs' EventBridge events, and erasure.

A job made with `POST /jobs` has a record keyed by its job id; a video dropped into the input
bucket has none and runs as before. Every change of a record is conditional on the status it
expects, so a duplicated event, a retried task or a DELETE racing the workflow can never move a
job backwards or bring a deleted job back:

    AWAITING_UPLOAD -> RUNNING -> SUCCEEDED | FAILED          (any status) -> DELETED (a tombstone)

A DELETED record answers 404 and expires with its TTL; it is what tells the workflow's late steps
that the job was erased.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from handlers.common import FAILED_PREFIX, JOB_PREFIX, client

AWAITING_UPLOAD, RUNNING, SUCCEEDED, FAILED, DELETED = "AWAITING_UPLOAD", "RUNNING", "SUCCEEDED", "FAILED", "DELETED"
API_DIR = "api/"  # API uploads: <InputPrefix>api/<job_id>/<filename>
CONSENT_PREFIX = "consent/"  # a job's own consent photos: consent/<job_id>/<photo>
OWNER_INDEX = "by-owner"  # GSI: owner (hash), created_at (range)
EVENT_SOURCE = "limelight"
JOB_SUCCEEDED, JOB_FAILED = "Job Succeeded", "Job Failed"
TOMBSTONE_SECONDS = 7 * 86400  # how long a deleted job's record keeps the workflow from reviving it

_JOB_ID = re.compile(r"[0-9a-f]{20}")
_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


def new_job_id() -> str:
    """20 random hex digits: the shape of the bucket jobs' ids, unguessable."""
    return secrets.token_hex(10)


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.fullmatch(value))


def api_video_key(input_prefix: str, job_id: str, filename: str) -> str:
    return f"{input_prefix}{API_DIR}{job_id}/{filename}"


def consent_prefix(job_id: str) -> str:
    return f"{CONSENT_PREFIX}{job_id}/"


def api_job_of(key: str, input_prefix: str) -> str | None:
    """The job id of an API upload's key, None for any other key."""
    match = re.fullmatch(re.escape(f"{input_prefix}{API_DIR}") + r"([0-9a-f]{20})/[^/]+", key)
    return match.group(1) if match else None


def _item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serialize(v) for k, v in values.items() if v is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    def number(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: number(v) for k, v in value.items()}
        if isinstance(value, (list, set)):
            return sorted(number(v) for v in value) if isinstance(value, set) else [number(v) for v in value]
        if type(value).__name__ == "Decimal":
            return int(value) if value == value.to_integral_value() else float(value)
        return value
    return {k: number(_deserialize(v)) for k, v in item.items()}


class JobStore:
    """The jobs table. Records hold names, keys, options and counts: never a URL or a face."""

    def __init__(self, table: str) -> None:
        self.table = table

    @property
    def _db(self) -> Any:
        return client("dynamodb")

    def create(self, record: dict[str, Any]) -> None:
        self._db.put_item(TableName=self.table, Item=_item(record), ConditionExpression="attribute_not_exists(job_id)")

    def get(self, job_id: str) -> dict[str, Any] | None:
        item = self._db.get_item(TableName=self.table, Key={"job_id": {"S": job_id}}, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def owned(self, owner: str, limit: int, start: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """`owner`'s jobs, newest first, deleted ones left out; and where the next page starts."""
        args: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#o = :o",
            "FilterExpression": "#s <> :deleted",
            "ExpressionAttributeNames": {"#o": "owner", "#s": "status"},
            "ExpressionAttributeValues": {":o": {"S": owner}, ":deleted": {"S": DELETED}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start:
            args["ExclusiveStartKey"] = _item(start)
        page = self._db.query(**args)
        last = page.get("LastEvaluatedKey")
        return [_plain(item) for item in page.get("Items", [])], (_plain(last) if last else None)

    def update(self, job_id: str, expect: Iterable[str], set_: dict[str, Any] | None = None, add: dict[str, Any] | None = None) -> bool:
        """Set / add fields when the job's status is one of `expect`; False when it is not (or the
        job does not exist): someone else moved it on first."""
        expect = list(expect)
        names, values, clauses = {"#status": "status"}, {}, []
        for i, status in enumerate(expect):
            values[f":e{i}"] = _serialize(status)
        sets = [f"#f{i} = :v{i}" for i in range(len(set_ or {}))]
        adds = [f"#a{i} :w{i}" for i in range(len(add or {}))]
        for i, (name, value) in enumerate((set_ or {}).items()):
            names[f"#f{i}"], values[f":v{i}"] = name, _serialize(value)
        for i, (name, value) in enumerate((add or {}).items()):
            names[f"#a{i}"], values[f":w{i}"] = name, _serialize(value)
        if sets:
            clauses.append("SET " + ", ".join(sets))
        if adds:
            clauses.append("ADD " + ", ".join(adds))
        expected = ", ".join(f":e{i}" for i in range(len(expect)))
        try:
            self._db.update_item(
                TableName=self.table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression=" ".join(clauses),
                ConditionExpression=f"attribute_exists(job_id) AND #status IN ({expected})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def is_deleted(self, job_id: str) -> bool:
        record = self.get(job_id)
        return record is None or record["status"] == DELETED


def now() -> int:
    return int(time.time())


def emit(detail_type: str, detail: dict[str, Any]) -> bool:
    """Put one event on the default EventBridge bus (source `limelight`); False when EventBridge
    refused it (the job's outcome stands: its record and objects are the truth, the event a notice)."""
    answer = client("events").put_events(
        Entries=[{"Source": EVENT_SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail, sort_keys=True), "EventBusName": "default"}]
    )
    return not answer.get("FailedEntryCount")


def _delete_all(bucket: str, prefix: str) -> int:
    """Delete every object and every version under `prefix` (a versioned bucket keeps old versions
    and delete markers: erasure removes them too)."""
    s3, count = client("s3"), 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for start in range(0, len(doomed), 1000):
            batch = doomed[start:start + 1000]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            count += len(batch)
    return count


def withdraw_if_deleted(store: JobStore | None, job_id: str, work_bucket: str) -> bool:
    """Called by a step of an API job *after* it wrote to the work bucket: when the job was deleted
    meanwhile, delete everything of it there (the API's sweep may have run before this step's
    writes). Write first, then look: one of the two sweeps always sees the last write."""
    if store is None or not store.is_deleted(job_id):
        return False
    s3 = client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=work_bucket, Prefix=f"{JOB_PREFIX}{job_id}/"):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=work_bucket, Delete={"Objects": keys, "Quiet": True})
    return True


def erase(job_id: str, *, input_bucket: str, input_prefix: str, work_bucket: str, output_bucket: str, output_prefix: str) -> int:
    """Delete every object of an API job in every bucket: its upload and consent photos (all
    versions), its intermediates, its result and report, its failure report. Returns how many."""
    if not is_job_id(job_id):  # a prefix of another job's keys must never be swept
        raise ValueError(f"not a job id: {job_id!r}")
    return (
        _delete_all(input_bucket, f"{input_prefix}{API_DIR}{job_id}/")
        + _delete_all(input_bucket, consent_prefix(job_id))
        + _delete_all(work_bucket, f"{JOB_PREFIX}{job_id}/")
        + _delete_all(output_bucket, f"{output_prefix}{job_id}/")
        + _delete_all(output_bucket, f"{FAILED_PREFIX}{job_id}.json")
    )
