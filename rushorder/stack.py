"""What ``rushorder up`` (``make up``) does: the whole stack in the foreground.

Order: private Redis and Postgres (unless their URLs are set) -> migrate -> rebuild Redis
from Postgres unless it holds live state (no marker: a first start, or a Redis that lost
its data) -> seed an empty database -> the mock platform, the outbox workers and the API
as child processes (``python -m rushorder.cli <sub>``) with prefixed logs. While it runs,
``<data_dir>/stack.json`` says where its servers are, so that other ``rushorder`` commands
find them (``rushorder.stackfile``). Ctrl-C or SIGTERM stops the API, then the workers,
then the platform, then the servers, and leaves no process behind. Every child runs in its
own process group, so a terminal's Ctrl-C reaches only this supervisor, which stops things
in that order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from rushorder import stackfile
from rushorder.servers import (
    PostgresServer,
    RedisServer,
    die_with_parent,
    port_in_use,
    private_dir,
)
from rushorder.settings import DEV_JWT_SECRET, Settings, is_loopback, redact

STOP_TIMEOUT_S = 10.0  # per stage (API, workers, platform) before SIGKILL
READY_TIMEOUT_S = 60.0
DEMO_USER_ID = 1
DEMO_ADMIN_ID = 1000
TOKEN_TTL_S = 7 * 24 * 3600

_print_lock = threading.Lock()


class StackError(RuntimeError):
    """Raised when the stack cannot start: a busy port, a failed step, a stop request."""


def say(name: str, line: str) -> None:
    """One line of output, prefixed with who said it; lines of different children never mix.
    A URL in it (ours, or one a child logs) never shows its password."""
    with _print_lock:
        sys.stdout.write(f"{name:<9}| {redact(line.rstrip())}\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------------------


class Child:
    """A ``rushorder <sub>`` child process whose output is streamed with a name prefix."""

    def __init__(self, name: str, sub: str, env: dict[str, str]) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "rushorder.cli", sub]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Child:
        """Spawn in a new process group; SIGTERM reaches it if we die without stopping it."""
        self.proc = subprocess.Popen(
            die_with_parent(self.argv, signal.SIGTERM), env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            process_group=0)
        self._reader = threading.Thread(target=self._stream, args=(self.proc.stdout,),
                                        name=f"log-{self.name}", daemon=True)
        self._reader.start()
        return self

    def _stream(self, pipe: IO[bytes]) -> None:
        with pipe:  # closed at EOF, once the child and its group are gone
            for raw in iter(pipe.readline, b""):
                say(self.name, raw.decode(errors="replace"))

    @property
    def returncode(self) -> int | None:
        """None while it runs, else its exit code (negative: killed by that signal)."""
        return None if self.proc is None else self.proc.poll()

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM), without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait, SIGKILL its whole group (its own children too) if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                say("up", f"{self.name} ignored SIGTERM for {timeout_s:.0f}s: SIGKILL")
        self._kill_group()
        self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)

    def _kill_group(self) -> None:
        """Whatever is left in the child's process group (e.g. server worker processes)."""
        assert self.proc is not None
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------


def holds_live_state(redis_url: str) -> bool:
    """Redis carries the live-state marker (engine/state.py). Counting keys would not do:
    RQ's own keys, or an outbox stream recreated after a loss, make a Redis that lost its
    data look full."""
    import redis

    from engine import state

    with redis.Redis.from_url(redis_url) as client:
        return state.marker(client) is not None


def http_ok(url: str) -> bool:
    """GET url answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return 200 <= int(answer.status) < 300
    except OSError:
        return False


def mint_token(settings: Settings, user_id: int, admin: bool) -> str:
    """A bearer token for the banner, or why there is none."""
    try:
        from rushorder.tokens import mint_token as mint

        with warnings.catch_warnings():
            if settings.jwt_secret == DEV_JWT_SECRET:  # the banner already says it is weak
                warnings.simplefilter("ignore")
            return str(mint(settings.jwt_secret, user_id, admin=admin, ttl_s=TOKEN_TTL_S))
    except Exception as exc:  # the banner must not kill a running stack
        return f"(unavailable: {exc})"


# ---------------------------------------------------------------------------------------
# The supervisor
# ---------------------------------------------------------------------------------------


class Stack:
    """Starts servers and children in order, watches them, stops them in reverse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: RedisServer | None = None
        self.postgres: PostgresServer | None = None
        self.children: list[Child] = []
        self.stopping = threading.Event()

    # -- signals ------------------------------------------------------------------------

    @contextmanager
    def signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM/SIGHUP ask for a clean stop instead of killing us mid-way."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self.stopping.is_set():
            say("up", f"{signal.Signals(signum).name}: stopping everything")
        self.stopping.set()

    def _check_stopping(self) -> None:
        if self.stopping.is_set():
            raise StackError("stopped before the stack was up")

    # -- start --------------------------------------------------------------------------

    def _preflight(self) -> None:
        """Fail before starting anything if a port we are about to listen on is taken."""
        s = self.settings
        wanted = {"HTTP_PORT": s.http_port}
        if s.redis_url is None:
            wanted["REDIS_PORT"] = s.redis_port
        if s.database_url is None:
            wanted["PG_PORT"] = s.pg_port
        if s.data_platform_url is None:
            wanted["PLATFORM_PORT"] = s.platform_port
        for name, port in wanted.items():
            if port_in_use(port):
                raise StackError(f"port {port} is in use (another `rushorder up`?); "
                                 f"set RUSHORDER_{name} to another port")

    def start_servers(self) -> Settings:
        """Private servers for unset URLs; the settings with every URL resolved."""
        s = self.settings
        data = s.data_path
        # Owner-only: it holds the servers' passwords, logs and data (a root-run Postgres
        # then adds traverse-only o+x, so that its own user reaches its folder).
        private_dir(data)
        redis_url, database_url = s.redis_url, s.database_url
        if redis_url is None:
            say("up", f"starting redis on port {s.redis_port} in {data / 'redis'}")
            self.redis = RedisServer(data / "redis", s.redis_port, isolate=True).start()
            redis_url = self.redis.url
        self._check_stopping()
        if database_url is None:
            say("up", f"starting postgres on port {s.pg_port} in {data / 'postgres'}")
            self.postgres = PostgresServer(data / "postgres", s.pg_port, isolate=True).start()
            database_url = self.postgres.url
        self._check_stopping()
        return s.replace(redis_url=redis_url, database_url=database_url, data_dir=str(data))

    def child_env(self, resolved: Settings) -> dict[str, str]:
        """Our environment plus the resolved URLs, so children build the same Settings."""
        assert resolved.redis_url is not None and resolved.database_url is not None
        assert resolved.rq_url is not None
        return {**os.environ, "RUSHORDER_REDIS_URL": resolved.redis_url,
                "RUSHORDER_RQ_REDIS_URL": resolved.rq_url,
                "RUSHORDER_DATABASE_URL": resolved.database_url,
                "RUSHORDER_DATA_DIR": resolved.data_dir, "PYTHONUNBUFFERED": "1"}

    def run_once(self, name: str, env: dict[str, str]) -> None:
        """Run ``rushorder <name>`` to completion; raise if it fails or we are stopped."""
        child = Child(name, name, env).start()
        while child.returncode is None:
            if self.stopping.wait(0.1):
                child.stop()
                raise StackError(f"stopped during {name}")
        child.stop()  # reaps it and drains its output
        if child.returncode != 0:
            raise StackError(f"`rushorder {name}` failed with exit code {child.returncode}")

    def prepare(self, resolved: Settings, env: dict[str, str]) -> None:
        """Migrate, rebuild Redis unless it holds live state, seed an empty database."""
        assert resolved.redis_url is not None and resolved.database_url is not None
        self.run_once("migrate", env)
        if not holds_live_state(resolved.redis_url):
            say("up", "redis holds no live state (a first start, or it lost its data): "
                      "loading it from postgres")
            self.run_once("rebuild", env)
        self.run_once("seed", env)

    def start_children(self, env: dict[str, str]) -> None:
        """Platform first and API last, so that each finds what it talks to."""
        if self.settings.data_platform_url is None:
            self.children.append(Child("platform", "platform", env).start())
        for n in range(1, self.settings.workers + 1):
            self.children.append(Child(f"worker-{n}", "worker", worker_env(
                env, self.settings.worker_metrics_port, n)).start())
        self.children.append(Child("api", "api", env).start())

    def wait_ready(self) -> bool:
        """Poll the API's readiness until it answers, a child dies, or time runs out."""
        host = "127.0.0.1" if self.settings.http_host in ("0.0.0.0", "") else \
            self.settings.http_host
        url = f"http://{host}:{self.settings.http_port}/health/ready"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self.dead_child() is not None:
                return False
            if http_ok(url):
                return True
            time.sleep(0.25)
        return False

    # -- watch and stop ---------------------------------------------------------------

    def dead_child(self) -> Child | None:
        """The first long-running child that has exited, if any."""
        return next((c for c in self.children if c.returncode is not None), None)

    def supervise(self) -> int:
        """Block until a signal (exit 0) or a child's death (exit 1)."""
        while not self.stopping.wait(0.5):
            if (dead := self.dead_child()) is not None:
                say("up", f"{dead.name} exited unexpectedly (code {dead.returncode}): "
                          "stopping everything")
                return 1
        return 0

    def stop_children(self) -> None:
        """API first (no new requests), then workers (they drain), then the platform."""
        api = [c for c in self.children if c.name == "api"]
        workers = [c for c in self.children if c.name.startswith("worker-")]
        rest = [c for c in self.children if c not in api and c not in workers]
        for stage in (api, workers, rest):
            for child in stage:
                child.terminate()  # the whole stage at once, then wait for each
            for child in stage:
                child.stop()

    def stop_servers(self) -> None:
        """Clean shutdowns: Postgres checkpoints, Redis fsyncs its AOF."""
        for server in (self.postgres, self.redis):
            if server is not None and server.running:
                say("up", f"stopping {server.name}")
                server.stop()

    # -- all of it ------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, supervise, stop everything; the process exit code."""
        with self.signals():
            try:
                self._preflight()
                resolved = self.start_servers()
                stackfile.publish(resolved)
                env = self.child_env(resolved)
                self.prepare(resolved, env)
                self._check_stopping()
                self.start_children(env)
                ready = self.wait_ready()
                if self.stopping.is_set():
                    return 0
                print_banner(self, resolved, ready)
                return self.supervise()
            except StackError as exc:
                say("up", str(exc))
                return 0 if self.stopping.is_set() else 1
            finally:
                stackfile.withdraw(self.settings.data_path, os.getpid())
                self.stop_children()
                self.stop_servers()
                say("up", "stopped")


def worker_env(env: dict[str, str], metrics_port: int, n: int) -> dict[str, str]:
    """Worker ``n``'s environment: its own metrics port (``metrics_port + n - 1``; 0: none)."""
    return {**env, "RUSHORDER_WORKER_METRICS_PORT": str(metrics_port + n - 1 if metrics_port
                                                          else 0)}


def worker_metrics(s: Settings) -> str:
    """Where the workers' metrics are, for the banner."""
    if not s.worker_metrics_port:
        return "no metrics (RUSHORDER_WORKER_METRICS_PORT=0)"
    ports = [s.worker_metrics_port + n for n in range(s.workers)]
    return f"metrics on http://{s.http_host}:{'/metrics, :'.join(map(str, ports))}/metrics"


def _server_line(server: RedisServer | PostgresServer | None, url: str | None) -> str:
    """A server for the banner: where it is, never its password."""
    if server is None:
        return f"{redact(url or '')}  (external)"
    return f"{server.address}  {server.binary.describe()}  (password in "\
           f"{server.secret_path()})"


def shows_tokens(s: Settings) -> bool:
    """The banner prints ready-made tokens only for the dev secret on loopback: signed
    with a secret of the operator's own, a 7-day admin token must not sit in a terminal's
    scrollback or a log."""
    return s.dev_secret and is_loopback(s.http_host)


def token_lines(s: Settings) -> tuple[list[str], str]:
    """The banner's token lines, and what the curl example uses as the user's token."""
    if not shows_tokens(s):
        return ([f"  tokens     none printed (RUSHORDER_JWT_SECRET is yours): "
                 f"rushorder token --user {DEMO_USER_ID} [--admin]"],
                f"$(rushorder token --user {DEMO_USER_ID})")
    user = mint_token(s, DEMO_USER_ID, admin=False)
    admin = mint_token(s, DEMO_ADMIN_ID, admin=True)
    return ([f"  user token (user {DEMO_USER_ID}):   {user}",
             f"  admin token (user {DEMO_ADMIN_ID}): {admin}",
             "  (signed with the built-in dev secret, which is published: loopback only; "
             "set RUSHORDER_JWT_SECRET for real use)"], user)


def print_banner(stack: Stack, resolved: Settings, ready: bool) -> None:
    """Where everything is, and tokens to try it with."""
    s = resolved
    api = f"http://{s.http_host}:{s.http_port}"
    tokens, user = token_lines(s)
    platform = redact(f"{s.platform_url}/events") + ("" if s.data_platform_url else "  (mock)")
    lines = [
        "",
        "rushorder is up" if ready else "rushorder started, but the API is NOT ready yet",
        f"  API        {api}  ({s.api_workers} processes; OpenAPI at {api}/schema)",
        f"  console    {api}/ops  (sign in with an admin token)",
        f"  platform   {platform}",
        f"  workers    {s.workers} outbox worker(s); {worker_metrics(s)}",
        f"  redis      {_server_line(stack.redis, s.redis_url)}",
        *([f"  rq redis   {redact(s.rq_redis_url)}  (RQ's jobs)"] if s.rq_redis_url else []),
        f"  postgres   {_server_line(stack.postgres, s.database_url)}",
        f"  data dir   {Path(s.data_dir)}",
        f"  stack file {stackfile.path_in(Path(s.data_dir))}  (other rushorder commands "
        "find these servers through it)",
        *tokens,
        "  try:",
        f"    curl -s {api}/api/v1/products",
        f"    curl -s -X POST -H 'Authorization: Bearer {user}' -H 'Content-Type: "
        f"application/json' -d '{{\"amount\": 50000}}' {api}/api/v1/balance/charge",
        "  Ctrl-C stops everything.",
        "",
    ]
    for line in lines:
        say("up", line)


def run(settings: Settings) -> int:
    """Entry point of ``rushorder up``."""
    return Stack(settings).run()
