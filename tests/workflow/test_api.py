"""The job API from outside: `infra.api` (what `make api` serves) over the local workflow, called
with a real HTTP client that signs with SigV4 (`limelight.submit.JobClient`, botocore's signer).

The video is the demo's clip (two public-domain portraits, not in ../shared): Grace Hopper and
the astronaut, each the consenting person of one job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from handlers import api as api_handler
from infra.api import SKEW_SECONDS, Refused, principal, running
from infra.local import EVENTS
from infra.moto_lambda import LocalContext
from limelight.submit import ApiCallError, JobClient, download, follow, upload
from workflow_support import assert_same_timing_and_audio

from tests.media import frame_times

ALICE, BOB = "AKIDALICE0000000", "AKIDBOB000000000"


class Keys:
    """A key pair as botocore's credential objects give it (any pair signs for `make api`)."""

    def __init__(self, access_key: str) -> None:
        self.access_key, self.secret_key, self.token = access_key, "not-checked-locally", None

    def get_frozen_credentials(self) -> Keys:
        return self


@pytest.fixture(scope="module")
def service():
    with running(0, {"SegmentSeconds": "1", "MaxSegmentSeconds": "10"}) as local:
        yield local


@pytest.fixture(scope="module")
def alice(service) -> JobClient:
    return JobClient(service.url, Keys(ALICE))


@pytest.fixture(scope="module")
def bob(service) -> JobClient:
    return JobClient(service.url, Keys(BOB))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The demo clip (3 s, a keyframe every second) and one photo of each of its two people."""
    import cv2

    import limelight.demo as demo

    folder = tmp_path_factory.mktemp("api_media")
    faces = demo.portraits()
    clip = folder / "two people.mp4"
    saved = demo.SECONDS
    demo.SECONDS = 3
    try:
        demo.make_clip(folder / "whole.mp4", faces)
    finally:
        demo.SECONDS = saved
    _with_keyframes(folder / "whole.mp4", clip, every=demo.FPS)
    photos = {}
    for name, rgb in faces.items():
        photos[name] = folder / f"{name}.jpg"
        cv2.imwrite(str(photos[name]), rgb[..., ::-1])
    return clip, photos, faces


def _with_keyframes(src: Path, dst: Path, every: int) -> None:
    """`src` re-encoded with a keyframe every `every` frames, its sound copied (segments to count)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout = out.add_stream("libx264", rate=vin.average_rate, options={"g": str(every), "keyint_min": str(every), "crf": "18"})
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        aout = out.add_stream_from_template(ain)
        for packet in inp.demux(vin, ain):
            if packet.stream is ain:
                if packet.dts is not None:
                    packet.stream = aout
                    out.mux(packet)
                continue
            for frame in packet.decode():
                frame.pict_type = av.video.frame.PictureType.NONE
                out.mux(vout.encode(frame))
        out.mux(vout.encode(None))


def _identifiable(video: Path, faces: dict[str, np.ndarray], frame_index: int) -> dict[str, float]:
    """Per person, the least distance from their portrait to a face dlib finds in one frame of
    `video` (<= 0.5: identifiable; 1.0: no face found at all)."""
    import face_recognition

    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == frame_index:
                rgb = frame.to_ndarray(format="rgb24")
                break
    found = face_recognition.face_encodings(rgb, face_recognition.face_locations(rgb, number_of_times_to_upsample=1))
    distances = {}
    for name, portrait in faces.items():
        reference = face_recognition.face_encodings(portrait)[0]
        distances[name] = float(min(face_recognition.face_distance(found, reference))) if found else 1.0
    return distances


def _submit(client: JobClient, clip: Path, consent: dict[str, Path], options: dict | None = None) -> str:
    job = client.create(clip.name, sorted(consent), options or {})
    for name, path in consent.items():
        upload(job["upload"]["consent"][name], path)
    upload(job["upload"]["video"], clip)
    return job["job_id"]


def _objects_of(service, job_id: str) -> list[str]:
    """Every object and version in every bucket whose key names the job."""
    cloud, found = service.cloud, []
    for bucket in (cloud.input_bucket, cloud.work_bucket, cloud.output_bucket):
        for page in cloud.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            found += [f"{bucket}/{v['Key']}" for v in page.get("Versions", []) + page.get("DeleteMarkers", []) if job_id in v["Key"]]
    return found


def _records(service) -> int:
    return service.cloud.dynamodb.scan(TableName=service.cloud.bucket("JobsTable"), Select="COUNT")["Count"]


def test_the_whole_flow_keeps_only_the_consenting_person_and_the_video_timing_and_sound(service, alice, media, tmp_path):
    clip, photos, faces = media
    # GIVEN a job with Grace Hopper's photo as its consent
    job_id = _submit(alice, clip, {"grace_hopper.jpg": photos["grace_hopper"]})
    # WHEN it is followed to its end
    seen = []
    job = follow(alice, job_id, lambda state: seen.append((state["status"], state["progress"]["segments_analyzed"],
                                                          state["progress"]["segments_done"])), interval=0.2, timeout=600)
    # THEN it succeeded, and its progress was seen moving through the segments, analyzed then rendered
    assert job["status"] == "SUCCEEDED", job
    assert job["progress"] == {"segments_analyzed": 3, "segments_done": 3, "segments_total": 3}
    assert {status for status, *_ in seen} >= {"RUNNING", "SUCCEEDED"}
    steps = [(analyzed, done) for _, analyzed, done in seen]
    assert steps == sorted(steps) and steps[-1] == (3, 3)
    assert all(done == 0 or analyzed == 3 for analyzed, done in steps)  # the render Map starts after every analysis
    # ...one track per person, over all three segments (joined at the cuts)
    assert job["faces"] == {"kept": 1, "blurred": 1}
    # ...its result downloads through the link it answered: frames, timestamps and sound unchanged
    out = tmp_path / "result.mp4"
    download(job["result"]["video_url"], out)
    assert_same_timing_and_audio(out, clip)
    assert len(frame_times(out)) == 75
    # ...Grace Hopper stays identifiable, the astronaut does not (she did not consent to this job)
    for index in (10, 40, 70):
        distances = _identifiable(out, faces, index)
        assert distances["grace_hopper"] <= 0.5 and distances["astronaut"] > 0.6, (index, distances)
    # ...and the job's report names her
    report = tmp_path / "report.json"
    download(job["result"]["report_url"], report)
    decisions = {t["decision"] for t in json.loads(report.read_text())["files"][0]["tracks"]}
    assert decisions == {"kept as grace_hopper", "blurred"}


def test_two_jobs_at_once_each_keep_only_their_own_consenting_person(service, alice, bob, media, tmp_path):
    clip, photos, faces = media
    # GIVEN two jobs on the same clip uploaded together, one consented by each person (two callers)
    grace = _submit(alice, clip, {"grace_hopper.jpg": photos["grace_hopper"]})
    astronaut = _submit(bob, clip, {"astronaut.jpg": photos["astronaut"]})
    # WHEN both run to their ends
    ended = {job_id: follow(client, job_id, interval=0.3, timeout=900) for client, job_id in ((alice, grace), (bob, astronaut))}
    # THEN each kept its own person only
    for job_id, kept, hidden in ((grace, "grace_hopper", "astronaut"), (astronaut, "astronaut", "grace_hopper")):
        assert ended[job_id]["status"] == "SUCCEEDED", ended[job_id]
        out = tmp_path / f"{job_id}.mp4"
        download(ended[job_id]["result"]["video_url"], out)
        distances = _identifiable(out, faces, 40)
        assert distances[kept] <= 0.5 and distances[hidden] > 0.6, (kept, distances)


def test_another_caller_sees_nothing_of_a_job_and_cannot_delete_it(service, alice, bob, media):
    clip, photos, _ = media
    job_id = alice.create(clip.name, [], {})["job_id"]
    # WHEN Bob asks for Alice's job, lists his jobs and tries to delete hers
    with pytest.raises(ApiCallError) as seen:
        bob.job(job_id)
    assert (seen.value.status, seen.value.name) == (404, "JobNotFound")
    assert job_id not in [j["job_id"] for j in bob.jobs(limit=100)["jobs"]]
    with pytest.raises(ApiCallError) as deleting:
        bob.delete(job_id)
    assert deleting.value.status == 404
    # THEN her job is there for her, as it was, and answers exactly as an unknown job does to him
    assert alice.job(job_id)["status"] == "AWAITING_UPLOAD"
    with pytest.raises(ApiCallError) as unknown:
        bob.job("0123456789abcdef0123")
    assert str(unknown.value).replace("0123456789abcdef0123", job_id) == str(seen.value)


def test_deleting_a_finished_job_erases_every_object_and_its_result_link(service, alice, media):
    clip, photos, _ = media
    job_id = _submit(alice, clip, {"grace_hopper.jpg": photos["grace_hopper"]})
    job = follow(alice, job_id, interval=0.3, timeout=600)
    assert job["status"] == "SUCCEEDED" and _objects_of(service, job_id)
    link = job["result"]["video_url"]
    urllib.request.urlopen(link, timeout=30).read(1)  # the link serves the video before
    # WHEN the job is deleted
    alice.delete(job_id)
    # THEN it answers 404, its link no longer serves the video, and no object of it is left anywhere
    with pytest.raises(ApiCallError) as gone:
        alice.job(job_id)
    assert gone.value.status == 404
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(link, timeout=30)
    assert refused.value.code == 404
    assert _objects_of(service, job_id) == []
    assert job_id not in [j["job_id"] for j in alice.jobs(limit=100)["jobs"]]


def test_deleting_a_running_job_stops_it_and_leaves_nothing_not_even_a_failure_report(service, alice, media):
    clip, photos, _ = media
    job_id = _submit(alice, clip, {"grace_hopper.jpg": photos["grace_hopper"]})
    deadline = time.monotonic() + 60
    while alice.job(job_id)["status"] != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
    # WHEN it is deleted while it runs
    alice.delete(job_id)
    # THEN its execution ends stopped, and once it has, nothing of the job is left
    arn = service.cloud.execution_arn(job_id)
    deadline = time.monotonic() + 120
    while service.cloud.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    # (ABORTED in AWS; moto's interpreter lets the running task finish, and the segment step,
    # finding its job deleted, ends it with JobStoppedError: FAILED)
    assert service.cloud.sfn.describe_execution(executionArn=arn)["status"] in {"ABORTED", "FAILED"}
    # (a step that was running when the stop came runs to its end, as in Lambda, then withdraws
    # what it wrote; the watcher hands the stop to the failure function)
    deadline = time.monotonic() + 60
    while _objects_of(service, job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)
    assert _objects_of(service, job_id) == []
    assert service.cloud.keys(service.cloud.output_bucket, f"failed/{job_id}") == []


def test_a_video_sent_before_its_consent_photo_fails_the_job_naming_the_missing_photo(service, alice, media):
    clip, photos, _ = media
    job = alice.create(clip.name, ["grace_hopper.jpg"], {})
    upload(job["upload"]["video"], clip)
    ended = follow(alice, job["job_id"], interval=0.2, timeout=60)
    assert ended["status"] == "FAILED"
    assert ended["error"]["name"] == "MissingConsentPhotosError" and "grace_hopper.jpg" in ended["error"]["message"]
    assert job["job_id"] not in [e["name"] for e in service.cloud.executions()]  # nothing ran


def test_every_job_end_puts_one_event_for_other_workflows(service, alice, media, tmp_path):
    clip, photos, _ = media
    service.cloud.job_events()  # what earlier tests sent
    ok = _submit(alice, clip, {})
    not_video = tmp_path / "notes.mp4"
    not_video.write_bytes(b"these are meeting notes, not a video\n" * 50)
    bad = _submit(alice, not_video, {})
    assert follow(alice, ok, interval=0.3, timeout=600)["status"] == "SUCCEEDED"
    failed = follow(alice, bad, interval=0.3, timeout=600)
    assert failed["status"] == "FAILED" and failed["error"]["name"] == "InvalidVideoError"
    events = {e["detail"]["job_id"]: e for e in service.cloud.job_events()}
    assert events[ok]["source"] == "limelight" and events[ok]["detail-type"] == "Job Succeeded"
    assert events[ok]["detail"]["faces"] == {"kept": 0, "blurred": 2}  # two people, each one track over three segments
    assert events[ok]["detail"]["output"]["video_key"].endswith("two people_anonymized.mp4")
    assert events[bad]["detail-type"] == "Job Failed" and events[bad]["detail"]["error"]["name"] == "InvalidVideoError"
    assert "url" not in json.dumps(events).lower()  # keys and counts, never a link


def _raw(service, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{service.url}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.parametrize("body, name", [
    ([1, 2], "MalformedJson"),
    ({"filename": "clip.mp4", "colour": "red"}, "UnknownField"),
    ({"consent": []}, "InvalidFilename"),
    ({"filename": "slides.pdf"}, "UnsupportedFileType"),
    ({"filename": "../../etc/clip.mp4"}, "InvalidFilename"),
    ({"filename": "clip.mp4", "consent": [f"p{i}.jpg" for i in range(21)]}, "TooManyConsentPhotos"),
    ({"filename": "clip.mp4", "consent": ["ann.jpg", "ANN.jpg"]}, "DuplicateConsentPhoto"),
    ({"filename": "clip.mp4", "consent": ["ann.gif"]}, "UnsupportedFileType"),
    ({"filename": "clip.mp4", "consent": "ann.jpg"}, "InvalidConsent"),
    ({"filename": "clip.mp4", "options": {"mode": "sparkle"}}, "InvalidOption"),
    ({"filename": "clip.mp4", "options": {"strength": 3}}, "UnknownOption"),
    ({"filename": "clip.mp4", "options": {"scale": 9}}, "InvalidOption"),
])
def test_a_bad_job_request_answers_400_naming_the_problem_and_creates_nothing(service, alice, body, name):
    before = _records(service)
    with pytest.raises(ApiCallError) as refused:
        alice.call("POST", "/jobs", body)
    assert (refused.value.status, refused.value.name) == (400, name)
    assert _records(service) == before


def test_a_body_that_is_not_json_answers_400(service, alice):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    before = _records(service)
    request = AWSRequest(method="POST", url=f"{service.url}/jobs", data=b"{not json", headers={"Content-Type": "application/json"})
    SigV4Auth(Keys(ALICE), "execute-api", "us-east-1").add_auth(request)
    status, body = _raw(service, "POST", "/jobs", b"{not json", dict(request.headers.items()))
    assert status == 400 and body["error"]["name"] == "MalformedJson"
    assert _records(service) == before


@pytest.mark.parametrize("method, path, status, name", [
    ("GET", "/jobs", 403, "MISSING_AUTHENTICATION_TOKEN"),          # unsigned
    ("POST", "/jobs", 403, "MISSING_AUTHENTICATION_TOKEN"),
    ("GET", "/jobs/0123456789abcdef0123", 404, "JobNotFound"),      # signed, unknown job
    ("GET", "/jobs/../../etc/passwd", 403, "MISSING_AUTHENTICATION_TOKEN"),  # no such route
    ("GET", "/jobs?limit=0", 400, "InvalidLimit"),
    ("GET", "/jobs?next=bm90LWEtY3Vyc29y", 400, "InvalidCursor"),
    ("DELETE", "/jobs/not-a-job-id", 404, "JobNotFound"),
])
def test_unsigned_unknown_and_malformed_requests_answer_a_named_error(service, alice, method, path, status, name):
    before = _records(service)
    if status == 403 and name == "MISSING_AUTHENTICATION_TOKEN" and "passwd" not in path:
        answered, body = _raw(service, method, path, b"{}" if method == "POST" else None)
        assert (answered, body["error"]["name"]) == (status, name)
    else:
        with pytest.raises(ApiCallError) as refused:
            base, _, query = path.partition("?")
            alice.call(method, base, query=dict(q.split("=") for q in query.split("&")) if query else None)
        assert (refused.value.status, refused.value.name) == (status, name)
    assert _records(service) == before


def test_a_signature_must_be_sigv4_for_execute_api_and_recent():
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    good = f"AWS4-HMAC-SHA256 Credential={ALICE}/{stamp[:8]}/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature={'a' * 64}"
    assert principal({"authorization": good, "x-amz-date": stamp}, "123456789012", now) == (f"arn:aws:iam::123456789012:user/{ALICE}", ALICE)
    for headers in (
        {"authorization": good.replace("execute-api", "s3"), "x-amz-date": stamp},                      # another service
        {"authorization": good, "x-amz-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - SKEW_SECONDS - 60))},  # stale
        {"authorization": good.replace("host;x-amz-date", "host"), "x-amz-date": stamp},                # date not signed
        {"authorization": "Basic YWxpY2U6c2VjcmV0", "x-amz-date": stamp},
    ):
        with pytest.raises(Refused) as refused:
            principal(headers, "123456789012", now)
        assert refused.value.status == 403


def test_jobs_are_listed_newest_first_a_page_at_a_time(service, media):
    clip, _, _ = media
    carol = JobClient(service.url, Keys("AKIDCAROL0000000"))
    created = []
    for _ in range(3):
        created.append(carol.create(clip.name, [], {})["job_id"])
        time.sleep(1.05)  # created_at is in seconds
    first = carol.jobs(limit=2)
    second = carol.jobs(limit=2, next_page=first["next"])
    listed = [j["job_id"] for j in first["jobs"] + second["jobs"]]
    assert listed == created[::-1]
    assert all(j["status"] == "AWAITING_UPLOAD" and "result" not in j for j in first["jobs"])


def test_an_upload_arriving_for_a_deleted_job_is_deleted_and_starts_nothing(service, alice, media):
    clip, _, _ = media
    job = alice.create(clip.name, [], {})
    alice.delete(job["job_id"])
    # WHEN the (still valid) upload form is used after the deletion
    upload(job["upload"]["video"], clip)
    deadline = time.monotonic() + 30
    while _objects_of(service, job["job_id"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    # THEN the video is not kept and no execution ran
    assert _objects_of(service, job["job_id"]) == []
    assert job["job_id"] not in [e["name"] for e in service.cloud.executions()]


def test_the_sample_events_drive_the_api_handler(service):
    # GIVEN the sample events `sam local invoke ApiFunction -e infra/events/api_*.json` sends
    context = LocalContext(function_name="api", invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:api")
    created = api_handler.handler(json.loads((EVENTS / "api_create_job.json").read_text()), context)
    assert created["statusCode"] == 201
    job = json.loads(created["body"])
    assert set(job["upload"]["consent"]) == {"alice.jpg"} and job["upload"]["video"]["fields"]["key"].endswith("/clip.mp4")
    listing = json.loads(api_handler.handler(json.loads((EVENTS / "api_list_jobs.json").read_text()), context)["body"])
    assert job["job_id"] in [j["job_id"] for j in listing["jobs"]]
    for name, status in (("api_get_job.json", 404), ("api_delete_job.json", 404)):  # their sample id is nobody's
        assert api_handler.handler(json.loads((EVENTS / name).read_text()), context)["statusCode"] == status


def test_limelight_submit_runs_a_job_end_to_end(service, media, tmp_path):
    clip, photos, faces = media
    known = tmp_path / "known"
    known.mkdir()
    (known / "astronaut.jpg").write_bytes(photos["astronaut"].read_bytes())
    out = tmp_path / "out.mp4"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDDAVE00000000", "AWS_SECRET_ACCESS_KEY": "any", "LIMELIGHT_API_URL": service.url}
    run = subprocess.run([sys.executable, "-m", "limelight.cli", "submit", str(clip), "--known-faces", str(known), "-o", str(out),
                          "--report", str(tmp_path / "r.json")], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "2 faces: 1 kept, 1 blurred" in run.stdout and str(out) in run.stdout  # each person once, over three segments
    assert_same_timing_and_audio(out, clip)
    distances = _identifiable(out, faces, 40)
    assert distances["astronaut"] <= 0.5 and distances["grace_hopper"] > 0.6
    assert json.loads((tmp_path / "r.json").read_text())["files"][0]["kept"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_limelight_submit_says_in_one_line_what_is_wrong(service, media, tmp_path):
    clip, _, _ = media
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDDAVE00000000", "AWS_SECRET_ACCESS_KEY": "any"}
    env.pop("LIMELIGHT_API_URL", None)
    slides = tmp_path / "slides.pdf"
    slides.write_bytes(b"%PDF-1.4\n")
    for args, words in (
        ([str(clip)], "--api URL"),
        ([str(slides), "--api", service.url], "UnsupportedFileType"),
        ([str(clip), "--api", "http://127.0.0.1:9/v1"], "cannot reach the job API"),
    ):
        run = subprocess.run([sys.executable, "-m", "limelight.cli", "submit", *args], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode != 0 and words in run.stderr, (args, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_make_api_serves_on_the_port_it_is_given_and_prints_its_base_url(tmp_path):
    import socket

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "LIMELIGHT_API_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "infra.api"], cwd=Path(__file__).resolve().parents[2], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(server.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)
        assert lines and f"http://127.0.0.1:{port}/v1" in lines[0], lines
        # an unsigned request is refused as API Gateway refuses it; a signed one is served
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/jobs", timeout=30)
        assert refused.value.code == 403
        assert JobClient(f"http://127.0.0.1:{port}/v1", Keys(ALICE)).jobs() == {"jobs": []}
    finally:
        server.terminate()
        server.wait(30)
