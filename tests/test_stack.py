"""Pieces of `rushorder up`: children die with their whole group, the data probes work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis

from rushorder.stack import Child, postgres_has_rows, psycopg_url, redis_is_empty


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (orphans wait for PID 1, which may never reap them)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stopping_a_child_kills_what_it_started() -> None:
    # A child whose own child ignores SIGTERM, as a server's worker process might.
    code = ("import subprocess, time; "
            "p = subprocess.Popen(['sh', '-c', \"trap '' TERM; sleep 600\"]); "
            "print(p.pid, flush=True); time.sleep(600)")
    child = Child("t", "unused", dict(os.environ))
    child.argv = [sys.executable, "-c", code]
    child.start()
    time.sleep(0.5)  # let the grandchild start
    grandchildren = subprocess.run(["pgrep", "-g", str(child.proc.pid)],  # type: ignore[union-attr]
                                   capture_output=True, text=True).stdout.split()
    child.stop(timeout_s=5)
    assert child.returncode == -signal.SIGTERM
    assert len(grandchildren) >= 2  # python and sh (and sleep)
    time.sleep(0.2)
    assert not any(_alive(int(pid)) for pid in grandchildren)


def test_postgres_has_rows_sees_any_user_table(database_url: str) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS probe_{table}")
        conn.execute(f"CREATE TABLE probe_{table}.{table} (v int)")
        conn.execute(f"INSERT INTO probe_{table}.{table} VALUES (1)")
    try:
        assert postgres_has_rows(database_url.replace("postgresql://", "postgresql+psycopg://"))
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA probe_{table} CASCADE")


def test_redis_is_empty_looks_at_the_urls_database(redis_url: str) -> None:
    empty_db = redis_url.rsplit("/", 1)[0] + "/15"
    with redis.Redis.from_url(empty_db) as client:
        client.flushdb()
        assert redis_is_empty(empty_db)
        client.set("k", 1)
        assert not redis_is_empty(empty_db)
        client.flushdb()


def test_psycopg_url_drops_the_sqlalchemy_driver() -> None:
    assert psycopg_url("postgresql+psycopg://u@h:1/d") == "postgresql://u@h:1/d"
    assert psycopg_url("postgresql://u@h:1/d") == "postgresql://u@h:1/d"
