"""The ASGI entry point servers import: ``api.asgi:app`` is a factory, not an app.

Each server worker calls it once, so settings are read and the app is built inside the
worker, never at import time.
"""

from __future__ import annotations

import logging

from litestar import Litestar

from api.app import create_app
from rushorder.settings import Settings


def app() -> Litestar:
    """Build the API from the ``RUSHORDER_*`` environment."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return create_app(settings)
