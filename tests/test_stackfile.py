"""Commands beside `make up`: `up` says where its servers are in <data_dir>/stack.json, and
a command with a server URL unset uses them, or says in one line what to set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import psycopg
import pytest
import redis
from psycopg import sql

from rushorder import stackfile
from rushorder.cli import main
from rushorder.servers import free_port
from rushorder.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STACK_REDIS_DB = 5  # engine tests use 1, API 2, workers 3
UNSET = ("RUSHORDER_REDIS_URL", "RUSHORDER_DATABASE_URL", "RUSHORDER_DATA_PLATFORM_URL")


@pytest.fixture
def by_hand(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment as in a second terminal: no server URL set, our own data dir."""
    for variable in UNSET:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("RUSHORDER_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """A new, empty database on the session's Postgres, dropped afterwards."""
    name = f"rushorder_stack_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield database_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def write_stack(data_dir: Path, pid: int, redis_url: str, database_url: str) -> None:
    """A stack file as `rushorder up` writes it."""
    running = stackfile.record_of(Settings(redis_url=redis_url, database_url=database_url), pid)
    stackfile.path_in(data_dir).write_bytes(msgspec.json.encode(running))


def migrated(database_url: str) -> bool:
    """The database has alembic's bookkeeping table."""
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT to_regclass('alembic_version')").fetchone() != (None,)


def test_the_stack_file_is_private_and_withdrawn_only_by_its_writer(
        tmp_path: Path, redis_url: str, database_url: str) -> None:
    resolved = Settings(redis_url=redis_url, database_url=database_url, data_dir=str(tmp_path),
                        http_host="0.0.0.0", http_port=8123, platform_port=8124)
    path = stackfile.publish(resolved)
    assert path == tmp_path / "stack.json" and path.stat().st_mode & 0o777 == 0o600
    running = stackfile.read(tmp_path)
    assert running is not None
    assert (running.pid, running.redis_url, running.database_url, running.api_url,
            running.platform_url) == (os.getpid(), redis_url, database_url,
                                      "http://127.0.0.1:8123", "http://127.0.0.1:8124")
    stackfile.withdraw(tmp_path, os.getpid() + 1)  # another `up` (that failed to start)
    assert path.exists()
    stackfile.withdraw(tmp_path, os.getpid())
    assert not path.exists()


@pytest.mark.parametrize(("command", "variables"), [
    ("audit", "RUSHORDER_REDIS_URL and RUSHORDER_DATABASE_URL are"),
    ("rebuild", "RUSHORDER_REDIS_URL and RUSHORDER_DATABASE_URL are"),
    ("seed", "RUSHORDER_REDIS_URL and RUSHORDER_DATABASE_URL are"),
    ("worker", "RUSHORDER_REDIS_URL and RUSHORDER_DATABASE_URL are"),
    ("migrate", "RUSHORDER_DATABASE_URL is"),
    ("replay", "RUSHORDER_REDIS_URL is"),
    ("api", "RUSHORDER_REDIS_URL is"),
])
def test_without_urls_or_a_running_up_a_command_says_in_one_line_what_to_set(
        command: str, variables: str, by_hand: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command]) == 2
    what = "them" if " and " in variables else variables.split()[0]
    assert capsys.readouterr().err == (
        f"rushorder {command}: {variables} not set and no `rushorder up` is running from "
        f"{by_hand} (start `make up`, or set {what})\n")


def test_a_stack_file_left_by_a_killed_up_is_not_used(
        by_hand: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    write_stack(by_hand, gone.pid, f"redis://127.0.0.1:{free_port()}/0",
                f"postgresql://postgres@127.0.0.1:{free_port()}/rushorder")
    assert main(["migrate"]) == 2
    assert f"left from pid {gone.pid}, which has exited" in capsys.readouterr().err


def test_a_running_up_whose_servers_do_not_answer_is_not_used(
        by_hand: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    silent = f"redis://127.0.0.1:{free_port()}/0"
    write_stack(by_hand, os.getpid(), silent, database_url)
    assert main(["replay"]) == 2
    err = capsys.readouterr().err
    assert f"(pid {os.getpid()}) does not answer at {silent}" in err
    assert err.count("\n") == 1


def test_a_command_uses_the_servers_of_a_running_up(
        by_hand: Path, redis_url: str, fresh_database: str) -> None:
    write_stack(by_hand, os.getpid(), redis_url, fresh_database)
    assert main(["migrate"]) == 0
    assert migrated(fresh_database)


def test_a_url_that_is_set_wins_over_the_running_up(
        by_hand: Path, redis_url: str, fresh_database: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_stack(by_hand, os.getpid(), redis_url, f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    monkeypatch.setenv("RUSHORDER_DATABASE_URL", fresh_database)
    assert main(["migrate"]) == 0  # the stack's (silent) Postgres was neither used nor probed
    assert migrated(fresh_database)


# -- the whole thing: `rushorder up` running, `rushorder audit` in a second terminal --------


class Output:
    """A process's merged output, collected by a thread, waited on by content."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:  # closed at EOF: the process and what it started are gone
            for line in proc.stdout:
                self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float) -> bool:
        """True once a line containing ``text`` was printed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.2)
        return False


@pytest.fixture
def stack_redis_url(redis_db: Callable[[int], str]) -> Iterator[str]:
    """Our own logical DB of the session's Redis, empty before and after."""
    with redis.Redis.from_url(redis_db(STACK_REDIS_DB)) as client:
        client.flushdb()
        yield redis_db(STACK_REDIS_DB)
        client.flushdb()


def test_audit_beside_a_running_up_uses_its_servers(
        tmp_path: Path, stack_redis_url: str, fresh_database: str,
        rq_redis_db: Callable[[int], str | None]) -> None:
    data = tmp_path / "data"
    up_env = {**os.environ, "RUSHORDER_REDIS_URL": stack_redis_url,
              "RUSHORDER_DATABASE_URL": fresh_database, "RUSHORDER_DATA_DIR": str(data),
              "RUSHORDER_HTTP_PORT": str(free_port()), "RUSHORDER_API_WORKERS": "1",
              "RUSHORDER_PLATFORM_PORT": str(free_port()), "RUSHORDER_LOG_LEVEL": "WARNING"}
    for name in ("RUSHORDER_DATA_PLATFORM_URL", "RUSHORDER_RQ_REDIS_URL",
                 "RUSHORDER_JWT_SECRET", "RUSHORDER_HTTP_HOST"):
        up_env.pop(name, None)  # the dev secret on loopback: the banner prints tokens
    if rq_url := rq_redis_db(STACK_REDIS_DB):  # cluster mode: RQ on a plain Redis
        up_env["RUSHORDER_RQ_REDIS_URL"] = rq_url
    second_terminal = {k: v for k, v in up_env.items() if k not in UNSET}
    audit = [sys.executable, "-m", "rushorder.cli", "audit"]
    up = subprocess.Popen([sys.executable, "-m", "rushorder.cli", "up"], env=up_env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(up)
    try:
        assert output.wait_for("rushorder is up", 120), "".join(output.lines)
        running = stackfile.read(data)
        assert running is not None and running.pid == up.pid
        assert (running.redis_url, running.database_url) == (stack_redis_url, fresh_database)

        beside = subprocess.run(audit, env=second_terminal, cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert beside.returncode == 0, beside.stdout + beside.stderr
        assert beside.stdout.strip().endswith("audit passed")
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    assert not stackfile.path_in(data).exists()
    printed = "".join(output.lines)
    assert "admin token (user 1000): ey" in printed
    passwords = [urlparse(url).password or "" for url in (stack_redis_url, fresh_database)]
    assert all(passwords) and not any(password in printed for password in passwords)

    after = subprocess.run(audit, env=second_terminal, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert after.returncode == 2
    assert after.stderr.splitlines() == [
        "rushorder audit: RUSHORDER_REDIS_URL and RUSHORDER_DATABASE_URL are not set and no "
        f"`rushorder up` is running from {data} (start `make up`, or set them)"]
