"""Run the API: ``settings.api_workers`` processes on one port, uvloop, under uvicorn (the
default) or granian (``settings.api_server``).

Measured here with the whole stack on 2 cores (docs/performance.md): uvicorn + httptools answered
POST /orders about 20% faster, because its event loop owns the sockets, while granian's
Rust I/O threads hand each request to the Python loop and back, a cross-thread wake-up
that an order (which waits on Redis) pays and an instant answer does not. Since uvicorn
writes each answer in one write() (``api.transport``) it answers plain reads ~18% faster
too; granian answered them 15-25% faster before that.

The worker processes import ``api.asgi:app`` and call it to build their own app (and
their own engine and Redis connection); nothing is shared between them but the port,
Redis, Postgres and the metrics folder. Any number of such servers may run side by side.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from typing import Any

from rushorder.settings import Settings

ASGI_TARGET = "api.asgi:app"
# httptools, with one write() per answer and the transport limits (api.transport)
HTTP_PROTOCOL = "api.transport:HttpToolsProtocol"


def _shared_metrics() -> str:
    """A fresh folder for prometheus_client's multiprocess mode, switched on for the workers.

    prometheus_client learns the folder from PROMETHEUS_MULTIPROC_DIR, which the workers
    inherit; its value class is chosen when it is imported, so it is re-chosen here in case
    something imported it before.
    """
    folder = tempfile.mkdtemp(prefix="rushorder-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    return folder


def _export(settings: Settings) -> None:
    """Hand ``settings`` to the workers, which read them back with ``Settings.from_env``."""
    for name in settings.__struct_fields__:
        value = getattr(settings, name)
        if value is None:
            os.environ.pop(f"RUSHORDER_{name.upper()}", None)
        else:
            os.environ[f"RUSHORDER_{name.upper()}"] = str(value)


def http_protocol(settings: Settings) -> Any:
    """uvicorn's ``http`` protocol: api.transport's, within the settings' limits (a
    partial of a module-level class, so that it reaches spawned workers by pickling)."""
    from api.transport import HttpToolsProtocol, TransportLimits

    return functools.partial(HttpToolsProtocol, limits=TransportLimits.of(settings))


def _uvicorn(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(ASGI_TARGET, factory=True, host=settings.http_host, port=settings.http_port,
                workers=settings.api_workers, loop="uvloop", http=http_protocol(settings),
                interface="asgi3", lifespan="on", access_log=False, backlog=2048,
                proxy_headers=False,  # no proxy sits in front by default; one ASGI layer less
                # Longer than a client's or load balancer's idle timeout (commonly 60 s): a
                # server that closes an idle connection first races the client's next
                # request on it, which then fails with a reset (uvicorn's default is 5 s).
                timeout_keep_alive=75,
                log_level=settings.log_level.lower(), timeout_graceful_shutdown=10)


def _granian(settings: Settings) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    try:
        level = LogLevels(settings.log_level.lower())
    except ValueError:
        level = LogLevels.info
    Granian(ASGI_TARGET, factory=True, address=settings.http_host, port=settings.http_port,
            interface=Interfaces.ASGI, workers=settings.api_workers, loop=Loops.uvloop,
            http=HTTPModes.http1, log_level=level, log_access=False, backlog=2048,
            http1_settings=granian_http1(settings)).serve()


def granian_http1(settings: Settings) -> Any:
    """granian's HTTP/1 limits from the settings: the head's read timeout and its buffer
    (hyper, under it, also refuses more than 100 header fields with 431; it has no
    connection cap, and its timeout covers the head only)."""
    from granian.http import HTTP1Settings

    return HTTP1Settings(header_read_timeout=int(settings.http_read_timeout_s * 1000),
                         max_buffer_size=max(8192, settings.http_max_header_bytes))


def serve(settings: Settings) -> None:
    """Serve the API until SIGINT/SIGTERM (blocking); refuses a secret anyone could sign
    with (the published one off loopback, or a short one) whoever calls it."""
    settings.check_servable()
    _export(settings)
    folder = _shared_metrics()
    try:
        (_granian if settings.api_server == "granian" else _uvicorn)(settings)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
