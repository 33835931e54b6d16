"""Plain helpers of the API's tests, imported by tests and fixtures alike (fixtures live
in conftest.py, which tests never import)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from rushorder.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SECRET = "api-tests-secret-of-more-than-32-bytes!"

# What issue 27 added to the answers of a client that uses none of it: a product made the
# old way (no options, no window, no limit, no category) and an order or cart line without
# an option. Old answers are these plus every old field with its old value.
PLAIN_PRODUCT = {"status": "ON_SALE", "on_sale": True, "sale_starts_at": None,
                 "sale_ends_at": None, "max_per_user": None, "category": None, "options": []}
PLAIN_LINE = {"option_id": None, "option_name": None}


def rfc3339(moment: datetime) -> str:
    """A UTC time as the contract writes it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _deathsig(args: list[str]) -> list[str]:
    """Make the server die with us even if pytest is SIGKILLed (where setpriv exists)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *args] if setpriv else args


class ServerProcess:
    """``api.server.serve`` in a child process (its server with its own workers)."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.http_port}"
        self.log = log
        env = {**os.environ, **{f"RUSHORDER_{name.upper()}": str(getattr(settings, name))
                                for name in settings.__struct_fields__
                                if getattr(settings, name) is not None}}
        code = "from api.server import serve; from rushorder.settings import Settings; " \
               "serve(Settings.from_env())"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(_deathsig([sys.executable, "-c", code]), env=env,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=REPO)

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Poll /health/ready until it answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.url} not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM (the server stops its workers), then kill if it hangs."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# Issue 27's sizes of a drop: the second costs extra, the third is sold out.
SIZES = [{"name": "260", "stock": 5}, {"name": "270", "extra_price": 1_000, "stock": 3},
         {"name": "280", "stock": 0}]
ADMIN_PRODUCTS = "/api/v1/admin/products"

Make = Callable[..., Awaitable[dict]]


def hours_from_now(hours: float) -> str:
    """A time ``hours`` from now (far enough that no test runs across it)."""
    return rfc3339(datetime.now(UTC) + timedelta(hours=hours))


def product_maker(client: httpx.AsyncClient, headers: dict[str, str], price: int) -> Make:
    """A maker of products created with a body (name "sneaker" and ``price`` filled in),
    as the API answered them."""

    async def create(**body: Any) -> dict:
        resp = await client.post(ADMIN_PRODUCTS, headers=headers,
                                 json={"name": "sneaker", "price": price, **body})
        assert resp.status_code == 201, resp.text
        return resp.json()

    return create
