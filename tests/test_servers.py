"""The private servers start, answer, keep their data across a restart and leave nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy

from rushorder.servers import (
    PostgresServer,
    RedisServer,
    ServerError,
    free_port,
    redis_version,
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A fresh dir outside pytest's tmp tree, whose 0700 parent the postgres user cannot enter."""
    root = Path(tempfile.mkdtemp(prefix="rushorder-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _alive(pid: int) -> bool:
    """A process with this pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    """Pids whose parent is pid (Postgres backends, for instance)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):  # gone meanwhile
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def _gone_within(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_session_servers_answer_on_their_urls(redis_url: str, database_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("rushorder",)
    engine = sqlalchemy.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
    engine.dispose()


def test_redis_runs_with_aof_fsync_always_and_noeviction(redis_server: RedisServer) -> None:
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        config = {**client.config_get("appendonly"), **client.config_get("appendfsync"),
                  **client.config_get("maxmemory-policy"), **client.config_get("bind")}
    assert config == {"appendonly": "yes", "appendfsync": "always",
                      "maxmemory-policy": "noeviction", "bind": "127.0.0.1"}


@pytest.mark.servers  # starts servers of its own
def test_redis_keeps_acknowledged_writes_across_a_restart(scratch: Path) -> None:
    server = RedisServer(scratch / "redis", free_port()).start()
    try:
        with redis.Redis.from_url(server.url) as client:
            client.set("stock:1", 41)
            client.incr("stock:1")
        server.stop()
        server.start()
        with redis.Redis.from_url(server.url) as client:
            assert client.get("stock:1") == b"42"
    finally:
        server.stop()


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    return dict(line.split(":", 1) for line in client.execute_command("CLUSTER", "INFO").split())


def _assert_one_node_holds_every_slot(server: RedisServer) -> str:
    """The node's id, once it says it is an ok one-node cluster with all slots."""
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        info = _cluster_info(client)
        assert (info["cluster_state"], info["cluster_slots_assigned"],
                info["cluster_known_nodes"]) == ("ok", "16384", "1")
        return str(client.execute_command("CLUSTER", "MYID"))


@pytest.mark.servers  # starts servers of its own
def test_a_cluster_redis_holds_every_slot_and_keeps_them_across_a_restart(
        scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = RedisServer(scratch / "redis", free_port(), cluster=True).start()
    try:
        node = _assert_one_node_holds_every_slot(server)
        with redis.Redis.from_url(server.url) as client:
            client.set("{ro}kept", 1)
        server.stop()

        def no_new_slots(client: redis.Redis) -> None:
            raise AssertionError("a restart must find its slots in nodes.conf")

        monkeypatch.setattr("rushorder.servers._add_every_slot", no_new_slots)
        server.start()
        assert _assert_one_node_holds_every_slot(server) == node
        with redis.Redis.from_url(server.url) as client:
            assert client.get("{ro}kept") == b"1"
    finally:
        server.stop()


GET_BOTH = "return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}"


@pytest.mark.parametrize("db", [0, 1])  # the session's Redis, and the engine tests' own
def test_in_cluster_mode_a_script_whose_keys_span_two_slots_fails_with_crossslot(
        cluster_only: None, redis_db: Callable[[int], str], db: int) -> None:
    with redis.Redis.from_url(redis_db(db)) as client:
        with pytest.raises(redis.exceptions.ClusterCrossSlotError):
            client.eval(GET_BOTH, 2, "{a}x", "{b}y")
        with pytest.raises(redis.exceptions.ClusterCrossSlotError):
            client.mget("{a}x", "{b}y")
        assert client.eval(GET_BOTH, 2, "{a}x", "{a}y") == [None, None]  # one slot: fine
        with pytest.raises(redis.exceptions.ResponseError, match="SELECT is not allowed"):
            client.execute_command("SELECT", 1)


@pytest.mark.servers  # starts servers of its own
def test_postgres_keeps_committed_rows_across_a_restart(scratch: Path) -> None:
    server = PostgresServer(scratch / "postgres", free_port()).start()
    try:
        with psycopg.connect(server.url) as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (7)")
        server.stop()
        server.start()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(7,)]
    finally:
        server.stop()


@pytest.mark.servers  # starts servers of its own
def test_stop_leaves_no_process(scratch: Path) -> None:
    servers = [RedisServer(scratch / "redis", free_port()).start(),
               PostgresServer(scratch / "postgres", free_port()).start()]
    pids = [server.pid for server in servers]
    assert all(pid is not None for pid in pids)
    backends = _children(servers[1].pid or -1)
    assert backends, "postgres should have its background processes"
    for server in servers:
        server.stop()
    assert not any(server.running for server in servers)
    assert _gone_within([pid for pid in pids if pid] + backends, 10)


@pytest.mark.skipif(not os.path.exists("/usr/bin/setpriv"), reason="needs util-linux setpriv")
@pytest.mark.servers  # starts servers of its own
def test_servers_die_with_a_killed_parent(scratch: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from rushorder.servers import PostgresServer, RedisServer, free_port
        r = RedisServer({str(scratch / 'redis')!r}, free_port()).start()
        p = PostgresServer({str(scratch / 'postgres')!r}, free_port()).start()
        print(r.pid, p.pid, flush=True)
        time.sleep(60)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          text=True) as parent:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        backends = _children(pids[1])
        parent.send_signal(signal.SIGKILL)
    assert _gone_within(pids + backends, 15)


def test_redis_older_than_7_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Redis server v=6.2.14 sha=00000000:0 malloc=jemalloc'\n")
    fake.chmod(0o755)
    with pytest.raises(ServerError, match="needs Redis >= 7.0"):
        redis_version(fake)


# -- closed to other local users ------------------------------------------------------------


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_session_redis_refuses_a_client_without_its_password(
        redis_server: RedisServer) -> None:
    for password in (None, "guess"):
        with redis.Redis(port=redis_server.port, password=password, socket_timeout=5) as client, \
                pytest.raises(redis.exceptions.AuthenticationError):
            client.ping()
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}


def test_the_session_postgres_refuses_a_login_without_its_password_on_tcp_and_socket(
        postgres_server: PostgresServer) -> None:
    assert postgres_server.socket_dir, "the session's postgres should have a socket"
    for host in ("127.0.0.1", postgres_server.socket_dir):
        for user in ("postgres", "rushorder"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(host=host, port=postgres_server.port, user=user,
                                dbname="rushorder", connect_timeout=5).close()
        # the right password works there: the refusal above was for want of it
        with psycopg.connect(host=host, port=postgres_server.port, user="rushorder",
                             password=postgres_server.app_password, dbname="rushorder") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_app_role_is_no_superuser_and_cannot_run_programs(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT current_user, rolsuper FROM pg_roles "
                           "WHERE rolname = current_user").fetchone()
        assert row == ("rushorder", False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")


@pytest.mark.servers  # starts servers of its own
def test_passwords_data_dirs_and_logs_are_private_and_passwords_stay_off_argv(
        scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jwt_secret = "a-jwt-secret-no-server-needs-0123456789"
    monkeypatch.setenv("RUSHORDER_JWT_SECRET", jwt_secret)
    servers = [RedisServer(scratch / "redis", free_port()).start(),
               PostgresServer(scratch / "postgres", free_port()).start()]
    try:
        secrets = [scratch / "redis.password", scratch / "postgres.password",
                   scratch / "postgres.superuser.password", scratch / "redis" / "auth.conf"]
        assert {path.name: _mode(path) for path in secrets} == {
            path.name: 0o600 for path in secrets}
        assert [_mode(scratch / name) for name in ("redis", "postgres")] == [0o700, 0o700]
        assert [_mode(scratch / name) for name in ("redis.log", "postgres.log")] == [0o600] * 2
        passwords = [path.read_text().strip() for path in secrets[:3]]
        assert all(len(password) >= 40 for password in passwords)
        for server in servers:
            argv = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()
            assert not any(password in argv for password in passwords)
            assert jwt_secret not in Path(f"/proc/{server.pid}/environ").read_bytes().decode()
        log = (scratch / "postgres.log").read_text() + (scratch / "redis.log").read_text()
        assert not any(password in log for password in passwords)
    finally:
        for server in servers:
            server.stop()


@pytest.mark.servers  # starts servers of its own
def test_a_restart_reuses_the_kept_passwords(scratch: Path) -> None:
    first = RedisServer(scratch / "redis", free_port()).start()
    first.stop()
    again = RedisServer(scratch / "redis", first.port).start()
    try:
        assert again.password == first.password
        with redis.Redis.from_url(again.url) as client:
            assert client.ping()
    finally:
        again.stop()


@pytest.mark.servers  # starts servers of its own
def test_a_cluster_made_with_trust_auth_by_older_code_is_closed_and_adopted(
        scratch: Path) -> None:
    server = PostgresServer(scratch / "postgres", free_port()).start()
    with psycopg.connect(server.admin_url("rushorder"), autocommit=True) as conn:
        conn.execute("CREATE TABLE legacy (v int)")  # what the old code's migrations made
        conn.execute("ALTER DATABASE rushorder OWNER TO postgres")
        conn.execute("DROP OWNED BY rushorder")
    with psycopg.connect(server.admin_url(), autocommit=True) as conn:
        conn.execute("DROP ROLE rushorder")
    server.stop()
    # As the old code left it: trust on socket and TCP, no password kept anywhere.
    (scratch / "postgres" / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n")
    for name in ("postgres.password", "postgres.superuser.password"):
        (scratch / name).unlink()
    upgraded = PostgresServer(scratch / "postgres", free_port()).start()
    try:
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host="127.0.0.1", port=upgraded.port, user="postgres",
                            dbname="rushorder").close()
        with psycopg.connect(upgraded.url) as conn:
            conn.execute("INSERT INTO legacy VALUES (1)")
            conn.execute("ALTER TABLE legacy ADD COLUMN w int")  # it owns it: migrations run
        assert _mode(scratch / "postgres.superuser.password") == 0o600
        assert upgraded.superuser_password not in (scratch / "postgres.log").read_text()
    finally:
        upgraded.stop()
