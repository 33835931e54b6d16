"""The ``rushorder`` command: one subcommand per process or chore.

Every subcommand builds :class:`Settings` from ``RUSHORDER_*`` variables and hands it to
the function that does the work. Those functions are imported inside each subcommand so
that ``rushorder --help`` stays fast and one missing part does not break the others.

A subcommand that needs Redis or Postgres resolves their URLs here, before it starts the
part that uses them: an unset URL is taken from the ``rushorder up`` running from
``RUSHORDER_DATA_DIR`` (``rushorder.stackfile``), and if there is none the command stops
with one line saying what to set.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rushorder.settings import BadSetting, MissingSetting, Settings, UnsafeSetting, redact

TOKEN_TTL_S = 7 * 24 * 3600

Command = Callable[[Settings, argparse.Namespace], int | None]


class CommandError(Exception):
    """Raised when a subcommand cannot run: a setting is missing or a part not installed."""


def load(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported now; a clear error if that part is not there (yet)."""
    try:
        target = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise CommandError(f"{module}.{name} is not available: {exc}") from exc
    return target  # type: ignore[no-any-return]


SERVER_URLS = {"redis_url": "RUSHORDER_REDIS_URL", "database_url": "RUSHORDER_DATABASE_URL"}


def servers(settings: Settings, *needed: str) -> Settings:
    """``settings`` with every unset server URL taken from the ``rushorder up`` running from
    the data dir; a CommandError saying what to set if one of ``needed`` stays unset."""
    unset = [field for field in SERVER_URLS if getattr(settings, field) is None]
    if not unset:
        return settings
    from rushorder import stackfile

    try:
        return stackfile.fill(settings, stackfile.find(settings, unset))
    except stackfile.NotRunning as exc:
        missing = [SERVER_URLS[field] for field in unset if field in needed]
        if missing:
            raise CommandError(what_to_set(missing, str(exc))) from None
        return settings


def what_to_set(variables: list[str], why: str) -> str:
    """One line: which variables are unset, why no running stack stands in, what to do."""
    if len(variables) == 1:
        return f"{variables[0]} is not set and {why} (start `make up`, or set {variables[0]})"
    return f"{' and '.join(variables)} are not set and {why} (start `make up`, or set them)"


# ---------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Run the whole stack in the foreground (refused, before anything starts, with a
    JWT secret that would let anyone sign an admin token)."""
    settings.check_servable()
    return int(load("rushorder.stack", "run")(settings))


def engine_url(settings: Settings) -> Settings:
    """``settings`` once its Redis URL is one the engine's client speaks (checked here, so
    a bad one is one line, not a traceback in every API worker)."""
    try:
        load("engine.connection", "parse_url")(settings.redis_url)
    except ValueError as exc:
        raise CommandError(f"RUSHORDER_REDIS_URL: {exc}") from None
    return settings


def cmd_api(settings: Settings, args: argparse.Namespace) -> None:
    """Serve the HTTP API (refused with a JWT secret that would let anyone sign an admin
    token: the dev secret off loopback, or a short one)."""
    settings.check_servable()
    load("api.server", "serve")(engine_url(servers(settings, "redis_url")))


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    """Run one outbox worker."""
    load("workers.main", "run")(servers(settings, "redis_url", "database_url"))


def cmd_platform(settings: Settings, args: argparse.Namespace) -> None:
    """Serve the mock data platform."""
    load("workers.platform_mock", "serve")(settings)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    """Bring the Postgres schema to the newest revision."""
    load("persistence.migrate", "upgrade")(servers(settings, "database_url").database_url)


def cmd_seed(settings: Settings, args: argparse.Namespace) -> None:
    """Load the demo catalog into an empty database."""
    seeded = load("rushorder.seed", "seed_demo")(
        engine_url(servers(settings, "redis_url", "database_url")))
    print("demo catalog loaded" if seeded else "database not empty: demo catalog not loaded")


def cmd_token(settings: Settings, args: argparse.Namespace) -> None:
    """Print a signed JWT for a user (or an admin) the API would honour, living at most
    30 days."""
    from engine.limits import ID  # the contract's ids, as the API checks them

    settings.check_secret()
    try:
        load("rushorder.tokens", "check_request")(args.user_id, args.ttl_s, ID.low, ID.high)
    except ValueError as exc:  # TokenRefused: one line, like every other refusal here
        raise CommandError(str(exc)) from None
    mint = load("rushorder.tokens", "mint_token")
    print(mint(settings.jwt_secret, args.user_id, admin=args.admin, ttl_s=args.ttl_s))


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild Redis state from Postgres."""
    resolved = servers(settings, "redis_url", "database_url")
    return int(load("rushorder.rebuild", "rebuild")(resolved, force=args.force,
                                                   if_needed=args.if_needed))


def cmd_replay(settings: Settings, args: argparse.Namespace) -> None:
    """Send the data platform's dead letters again, showing how far it got."""
    from rushorder.progress import Progress

    replay = load("workers.forwarder", "replay_dead_letters")
    with Progress("replay") as progress:
        delivered = replay(servers(settings, "redis_url"), progress=progress)
    print(f"{delivered} dead letter(s) delivered; the rest stay for another try")


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """Compare Redis with Postgres and report drift."""
    return int(load("rushorder.audit", "audit")(servers(settings, "redis_url", "database_url")))


def cmd_outbox(settings: Settings, args: argparse.Namespace) -> int:
    """List, retry or drop the outbox entries the Postgres writer set aside."""
    return int(load("rushorder.setaside", "outbox")(servers(settings, "database_url"), args))


# ---------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------

DESCRIPTION = """\
rushorder: an e-commerce order service that stays correct under flash-sale load.

Configuration comes from RUSHORDER_* environment variables (see README.md); unset
RUSHORDER_REDIS_URL / RUSHORDER_DATABASE_URL make `up` start private servers, and make
the other commands use the servers of the `up` running from RUSHORDER_DATA_DIR."""

PROGRESS_HELP = (" Progress goes to stderr: a bar on a terminal, otherwise a line per stage and "
                 "every 5 s.")
SERVERS_HELP = (" A server URL left unset is taken from the `rushorder up` running from "
                "RUSHORDER_DATA_DIR (its stack.json); with none running, the command says "
                "what to set and exits 2.")

SUBCOMMANDS: list[tuple[str, Command, str, str]] = [
    ("up", cmd_up, "run the whole stack in the foreground (make up)",
     "Start private Redis and Postgres under RUSHORDER_DATA_DIR unless their URLs are set, "
     "migrate, rebuild Redis from Postgres if Redis is empty, seed the demo catalog into "
     "an empty database, then run the API, the outbox workers and the mock data platform "
     "with prefixed logs. Prints URLs (never a password) and, only when it runs the dev "
     "secret on loopback, ready-to-use tokens. Refuses to start with the published dev "
     "secret unless RUSHORDER_HTTP_HOST is loopback, or with a RUSHORDER_JWT_SECRET under "
     "32 bytes. Ctrl-C stops everything."),
    ("api", cmd_api, "serve the HTTP API (RUSHORDER_API_WORKERS processes)",
     "Serve the HTTP API on RUSHORDER_HTTP_HOST:RUSHORDER_HTTP_PORT; blocks. Refuses to "
     "start with the published dev secret unless RUSHORDER_HTTP_HOST is loopback, or with a "
     "RUSHORDER_JWT_SECRET under 32 bytes." + SERVERS_HELP),
    ("worker", cmd_worker, "run one outbox worker (Redis -> Postgres, data platform)",
     "Drain the Redis outbox into Postgres and forward order events to the data "
     "platform, one process each; both beat for the console (/ops), and their metrics are "
     "served on RUSHORDER_WORKER_METRICS_PORT; blocks." + SERVERS_HELP),
    ("platform", cmd_platform, "serve the mock data platform",
     "Serve the mock data platform on RUSHORDER_PLATFORM_PORT: POST /events, POST "
     "/events/batch, GET /events, POST /control (fail, throttle, stall, reject); blocks."),
    ("migrate", cmd_migrate, "upgrade the Postgres schema to the newest revision",
     "Run the Alembic migrations against RUSHORDER_DATABASE_URL." + SERVERS_HELP),
    ("seed", cmd_seed, "load the demo catalog into an empty database",
     "Load the demo products and coupons, only if the database holds none." + SERVERS_HELP),
    ("token", cmd_token, "print a signed JWT for a user id",
     "Print a bearer token signed with RUSHORDER_JWT_SECRET (32 bytes or more) for a user "
     "id the API accepts (1 to 99999999999999), living 1 s to 30 days; anything else is "
     "refused with exit 2."),
    ("rebuild", cmd_rebuild, "rebuild Redis state from Postgres",
     "Load Redis from Postgres, the durable copy, and mark its state live (the first "
     "start, or after Redis lost its data). Refuses a Redis that holds live state unless "
     "--force (or does nothing with --if-needed), and always refuses while the outbox "
     "holds events Postgres does not have yet." + PROGRESS_HELP + SERVERS_HELP),
    ("audit", cmd_audit, "check that Redis and Postgres agree",
     "Compare Redis with Postgres and report the differences; exits 1 if any."
     + PROGRESS_HELP + SERVERS_HELP),
    ("outbox", cmd_outbox, "list, retry or drop outbox entries Postgres refused",
     "Entries Postgres refused (or the writer could not decode) are set aside in "
     "outbox_set_aside, with the error, so that the others go on; later entries of the same "
     "user or product wait behind them. `list` shows them, `retry` applies them (all, or "
     "--id N) once the cause is fixed, `drop --id N` gives one up. Exits 1 while any is "
     "left." + SERVERS_HELP),
    ("replay", cmd_replay, "send the data platform's dead letters again",
     "Events the forwarder gave up on wait in the dead-letter stream {ro}:outbox:dead; "
     "this posts each once more to the data platform and drops those delivered. The "
     "platform is RUSHORDER_DATA_PLATFORM_URL; unset, the running `rushorder up`'s, else "
     "the mock on RUSHORDER_PLATFORM_PORT. The console's Replay button (/ops) asks a "
     "running platform forwarder to do the same." + PROGRESS_HELP + SERVERS_HELP),
]


def _add_options(name: str, sub: argparse.ArgumentParser) -> None:
    """The few subcommand-specific options."""
    if name == "token":
        sub.add_argument("--user", dest="user_id", type=int, required=True, metavar="N",
                         help="the user id (the token's sub claim)")
        sub.add_argument("--admin", action="store_true", help="role=admin instead of user")
        sub.add_argument("--ttl-s", type=int, default=TOKEN_TTL_S,
                         help=f"seconds until the token expires, 1 to 2592000 (30 days; default "
                              f"{TOKEN_TTL_S})")
    elif name == "outbox":
        load("rushorder.setaside", "add_options")(sub)
    elif name == "rebuild":
        mode = sub.add_mutually_exclusive_group()
        mode.add_argument("--force", action="store_true",
                          help="rebuild even though Redis holds live state (replaces it)")
        mode.add_argument("--if-needed", action="store_true",
                          help="rebuild only if Redis holds no live state; exit 0 either "
                               "way (for deploy scripts and init containers)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(prog="rushorder", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, short, long in SUBCOMMANDS:
        sub = subs.add_parser(name, help=short, description=long)
        _add_options(name, sub)
        sub.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rushorder`` script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except BadSetting as exc:
        print(f"rushorder: bad setting: {redact(str(exc))}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(settings, args) or 0
    except (CommandError, MissingSetting, UnsafeSetting) as exc:
        # A message may quote a server URL: never with its password.
        print(f"rushorder {args.command}: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
