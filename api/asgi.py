"""The ASGI entry point servers import: ``api.asgi:app`` is a factory, not an app.

Each server worker calls it once, so settings are read and the app is built inside the
worker, never at import time.
"""

from __future__ import annotations

import gc
import logging

from litestar import Litestar

from api.app import create_app
from rushorder.settings import Settings

# Python's cyclic collector by default runs a young collection every 700 allocations and
# now and then a full one over every object the worker holds (the app, its routes, the
# libraries); an answer allocates hundreds, so under load the collector took ~6% of a
# worker's CPU (py-spy) and its full passes showed in the tail: order p99 25-35 ms
# against 15-18 ms with the settings below (one worker, wrk -c64, interleaved runs).
# What the app holds once built is frozen out of every pass, and young passes run every
# 20,000 allocations; an answer's garbage is almost all freed by reference counting
# before then anyway.
GC_THRESHOLDS = (20_000, 50, 100)


def app() -> Litestar:
    """Build the API from the ``RUSHORDER_*`` environment."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    built = create_app(settings)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return built
