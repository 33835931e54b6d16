"""Pieces of `rushorder up`: children die with their whole group, the data probes work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from engine import keys, state
from rushorder.settings import Settings
from rushorder.stack import Child, Stack, holds_live_state


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


def test_live_state_is_the_marker_not_a_key_count(redis_db: Callable[[int], str]) -> None:
    db = redis_db(15)
    with redis.Redis.from_url(db) as client:
        client.flushdb()
        client.set("rq:workers", 1)  # RQ's keys, or a recreated outbox, do not make it live
        client.xadd(keys.OUTBOX, {"e": "{}"})
        assert not holds_live_state(db)
        state.mark(client, "tests")
        assert holds_live_state(db)
        client.flushdb()
        assert not holds_live_state(db)


def test_up_makes_its_data_dir_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # as an older `up` left it
    settings = Settings(redis_url="redis://:pw@127.0.0.1:1/0", data_dir=str(data),
                        database_url="postgresql://rushorder:pw@127.0.0.1:1/rushorder")
    Stack(settings).start_servers()  # both URLs set: no server is started
    assert data.stat().st_mode & 0o777 == 0o700
