"""A private Redis for a load script: started in a temp dir on a free port, with the
password and protected mode of ``make up``'s, and gone with the dir when the block ends."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rushorder.servers import RedisServer, free_port  # noqa: E402


@contextmanager
def private_redis(prefix: str = "rushorder-bench-") -> Iterator[str]:
    """A private Redis in a temp dir named ``prefix...``; its URL (password included)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = RedisServer(root / "redis", free_port()).start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
