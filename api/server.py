"""Run the API under granian: ``settings.api_workers`` processes on one port, uvloop.

The worker processes import ``api.asgi:app`` and call it to build their own app (and
their own engine and Redis connection); nothing is shared between them but the port,
Redis, Postgres and the metrics folder. Any number of such servers may run side by side.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.log import LogLevels
from granian.server.common import AbstractServer

from rushorder.settings import Settings

ASGI_TARGET = "api.asgi:app"


def _shared_metrics() -> str:
    """A fresh folder for prometheus_client's multiprocess mode, switched on for the workers.

    prometheus_client learns the folder from PROMETHEUS_MULTIPROC_DIR, which the forked
    workers inherit; its value class is chosen when it is imported, so it is re-chosen
    here in case something imported it before.
    """
    folder = tempfile.mkdtemp(prefix="rushorder-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    return folder


def _log_level(name: str) -> LogLevels:
    try:
        return LogLevels(name.lower())
    except ValueError:
        return LogLevels.info


def server(settings: Settings) -> AbstractServer[Any]:
    """A granian server for the API as configured (not started)."""
    return Granian(
        ASGI_TARGET,
        factory=True,
        address=settings.http_host,
        port=settings.http_port,
        interface=Interfaces.ASGI,
        workers=settings.api_workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        log_level=_log_level(settings.log_level),
        log_access=False,
        backlog=2048,
    )


def _export(settings: Settings) -> None:
    """Hand ``settings`` to the workers, which read them back with ``Settings.from_env``."""
    for name in settings.__struct_fields__:
        value = getattr(settings, name)
        if value is None:
            os.environ.pop(f"RUSHORDER_{name.upper()}", None)
        else:
            os.environ[f"RUSHORDER_{name.upper()}"] = str(value)


def serve(settings: Settings) -> None:
    """Serve the API until SIGINT/SIGTERM (blocking)."""
    _export(settings)
    folder = _shared_metrics()
    try:
        server(settings).serve()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
