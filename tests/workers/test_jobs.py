"""A worker runs only the project's own RQ jobs: anything queued by hand fails unrun."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from engine.outbox import POSTGRES
from tests.workers.drain_support import Process, wait_for
from workers.jobs import QUEUES, ForeignJob, ProjectJob, ensure_job


class Planted:
    """An argument whose unpickling runs a shell command (what pickle lets a job do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def status(rq: redis.Redis, job_id: str) -> bytes | None:
    """A job's status as RQ stored it (read raw: nothing of the job is deserialized)."""
    return rq.hget(f"rq:job:{job_id}", "status")  # type: ignore[return-value]


def test_a_worker_fails_jobs_it_did_not_define_without_running_them(
    rq: redis.Redis, worker: Callable[..., Process], tmp_path: Path,
) -> None:
    name = QUEUES[POSTGRES]
    markers = [tmp_path / f"marker-{n}" for n in range(3)]
    pickled = Queue(name, connection=rq)  # RQ's default serializer, as a hand would queue
    queued = [
        pickled.enqueue(os.system, f"touch {markers[0]}"),
        pickled.enqueue(print, Planted(markers[1])),
        Queue(name, connection=rq, serializer=JSONSerializer).enqueue(
            "os.system", f"touch {markers[2]}"),
    ]
    process = worker(POSTGRES)  # started after: the queued jobs come first
    wait_for(lambda: all(status(rq, job.id) == b"failed" for job in queued), 30,
             what="the planted jobs to fail")

    failed = FailedJobRegistry(name, connection=rq, serializer=JSONSerializer)
    assert {job.id for job in queued} <= set(failed.get_job_ids())
    assert not any(marker.exists() for marker in markers)
    log = process.log.read_text()
    assert "refused RQ job" in log and "os.system is not one of the project's jobs" in log
    # and the worker goes on with its own job
    wait_for(lambda: status(rq, _own_job(rq)) in (b"started", b"finished"), 30,
             what="the worker's own drain job")


def _own_job(rq: redis.Redis) -> str:
    """The id of a drain job the worker queued for itself (started or waiting)."""
    for key in rq.scan_iter(match="rq:job:*"):
        description: Any = rq.hget(key, "description") or b""
        if description.startswith(b"drain the outbox's"):
            return key.decode().removeprefix("rq:job:")
    return ""


def test_a_project_job_fails_jobs_it_did_not_define_without_running_them(
    fake_rq: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # The plumbing alone, in-process on fakeredis: RQ's worker with the project's job class
    # (the test above does it in a real worker process, then goes on with its own job).
    name = QUEUES[POSTGRES]
    markers = [tmp_path / f"marker-{n}" for n in range(3)]
    pickled = Queue(name, connection=fake_rq)
    queued = [
        pickled.enqueue(os.system, f"touch {markers[0]}"),
        pickled.enqueue(print, Planted(markers[1])),
        Queue(name, connection=fake_rq, serializer=JSONSerializer).enqueue(
            "os.system", f"touch {markers[2]}"),
    ]
    SimpleWorker([name], connection=fake_rq, job_class=ProjectJob,
                 serializer=JSONSerializer).work(burst=True)

    assert [status(fake_rq, job.id) for job in queued] == [b"failed"] * 3
    failed = FailedJobRegistry(name, connection=fake_rq, serializer=JSONSerializer)
    assert {job.id for job in queued} <= set(failed.get_job_ids())
    assert not any(marker.exists() for marker in markers)
    assert "os.system is not one of the project's jobs" in caplog.text


def test_only_the_projects_functions_resolve(fake_rq: redis.Redis) -> None:
    rq = fake_rq  # RQ's plumbing only: fakeredis
    own = ensure_job(POSTGRES, rq, budget_s=1.0)
    assert own is not None
    assert ProjectJob.fetch(own.id, rq, JSONSerializer).func.__name__ == "drain_to_postgres"
    for func, args in [("os.system", ("true",)), ("workers.jobs.drain_to_postgres", (1e9,)),
                       ("workers.jobs.ensure_job", ("postgres",))]:
        job = Queue("elsewhere", connection=rq, serializer=JSONSerializer).enqueue(func, *args)
        with pytest.raises(ForeignJob):
            _ = ProjectJob.fetch(job.id, rq, JSONSerializer).func
    plain = Job.fetch(own.id, rq, JSONSerializer)
    assert plain.func_name == "workers.jobs.drain_to_postgres"
