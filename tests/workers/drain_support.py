"""Helpers of the workers' tests: worker and platform processes, a cuttable TCP proxy, waits."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine as Database

from engine import Engine
from engine.models import Coupon, NewOption, Order, Product
from rushorder.settings import Settings

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
TABLES = ("users", "balance_history", "products", "product_changes", "product_options",
          "option_changes", "coupons", "issued_coupons", "orders", "order_lines", "payments",
          "sales_hourly", "outbox_applied")
CART_TABLES = ("carts", "cart_lines")  # issue 28's, apart: TABLES' counts are compared whole


def wait_for(check: Callable[[], T], timeout_s: float = 30.0, every_s: float = 0.1,
             what: str = "condition") -> T:
    """Poll ``check`` until it answers something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def env_of(settings: Settings) -> dict[str, str]:
    """The RUSHORDER_* environment that makes ``Settings.from_env()`` equal ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUSHORDER_")}
    for name in settings.__struct_fields__:
        value = getattr(settings, name)
        if value is not None:
            env[f"RUSHORDER_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_us(args: list[str]) -> list[str]:
    """The child gets SIGTERM if pytest dies (setpriv, where present)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *args] if setpriv else args


class Process:
    """A child process of the test (``python -m <module> <args>``), its output in a log."""

    def __init__(self, settings: Settings, log: Path, module: str, *args: str) -> None:
        self.log = log
        self.argv = _die_with_us([sys.executable, "-m", module, *args])
        self.env = env_of(settings)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        """Start it (again)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO,
                                         stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        """Its pid."""
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL, no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def output(self) -> str:
        """What it printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def platform_up(url: str) -> bool:
    """The mock platform answers ``GET /health``."""
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Platform:
    """The mock platform process and a client to steer and inspect it."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.url = settings.platform_url
        self.process = Process(settings, log, "rushorder.cli", "platform")

    def start(self) -> Platform:
        """Start it and wait until it answers."""
        self.process.start()
        wait_for(lambda: platform_up(self.url), 20, what="the mock platform")
        return self

    def control(self, mode: str, stall_s: float = 5.0, **rules: object) -> None:
        """Switch the platform to ``ok``, ``fail``, ``throttle`` or ``stall``; ``rules``:
        ``reject_pattern`` and ``reject_every`` (see workers.platform_mock)."""
        httpx.post(f"{self.url}/control", json={"mode": mode, "stall_s": stall_s, **rules},
                   timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: kept, received, duplicates, rejected, requests by endpoint."""
        answer = httpx.get(f"{self.url}/stats", timeout=5)
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    def events(self) -> dict[str, Any]:
        """``GET /events``: items in arrival order, received and duplicates counters."""
        answer = httpx.get(f"{self.url}/events", timeout=5)
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    def event_ids(self) -> list[str]:
        """The event ids kept, in arrival order."""
        return [item["event_id"] for item in self.events()["items"]]


class TcpProxy:
    """Forwards a local port to a server; ``cut()`` drops every connection and refuses new
    ones (the server looks down), ``restore()`` brings it back on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self._serve()

    def _serve(self) -> None:
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Close the port and every open connection."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone may not)
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()

    def restore(self) -> None:
        """Listen again on the same port."""
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self._serve()


def counts(db: Database) -> dict[str, int]:
    """Rows per table."""
    with db.connect() as conn:
        return {t: int(conn.scalar(sa.text(f"SELECT count(*) FROM {t}")) or 0) for t in TABLES}


def scalar(db: Database, sql: str, **params: object) -> object:
    """One value from Postgres."""
    with db.connect() as conn:
        return conn.scalar(sa.text(sql), params)


async def answers(engine: Engine, users: list[int], items: list[Product],
                  coupons: list[Coupon]) -> dict[str, Any]:
    """Everything a client can read that Postgres keeps."""
    return {
        "products": await engine.products(limit=100),
        "each product": [await engine.product(p.id) for p in items],
        "top": (await engine.top()).items,
        "coupons": [await engine.coupon(c.id) for c in coupons],
        "balances": [await engine.balance(u) for u in users],
        "history": [await engine.history(u, limit=100) for u in users],
        "orders": [await engine.orders(u, limit=100) for u in users],
        "each order": [await engine.order(u, o.id) for u in users
                       for o in (await engine.orders(u, limit=100)).items],
        "user coupons": [await engine.user_coupons(u, limit=100) for u in users],
        "carts": [await engine.cart(u) for u in users],
    }


async def busy_day(engine: Engine, items: list[Product], coupons: list[Coupon]) -> list[int]:
    """Charges, restocks, coupons issued and used, orders placed and cancelled."""
    users = list(range(1, 9))
    await engine.update_product(items[0].id, stock_delta=25, price=1_500)
    for user in users:
        await engine.charge(user, 200_000)
        issued = await engine.issue_coupon(user, coupons[user % 2].id)
        first = await engine.place_order(user, [(items[user % 3].id, user), (items[3].id, 1)],
                                         issued.id)
        await engine.place_order(user, [(items[(user + 1) % 3].id, 2)])
        if user % 3 == 0:
            await engine.cancel_order(user, first.id)
    return users


async def fill_carts(engine: Engine, users: list[int], items: list[Product],
                     checkout: bool = True) -> None:
    """Carts of one to three lines (an option's when the product has options), some lines
    set again or taken out, and (``checkout``) the last user's checked out (empty again)."""
    for n, user in enumerate(users):
        lines = [(p.id, p.options[n % len(p.options)].id if p.options else None)
                 for p in items[:n % 3 + 1]]
        for product_id, option_id in lines:
            await engine.put_cart_item(user, product_id, n % 2 + 1, option_id)
        if n % 3 == 1:
            product_id, option_id = lines[0]
            await engine.put_cart_item(user, product_id, 3, option_id)
        if n % 3 == 2:
            await engine.remove_cart_item(user, *lines[-1])
    if checkout:
        await engine.checkout(users[-1])


async def orders_and_cancels(engine: Engine, item: Product, users: list[int]) -> set[str]:
    """An order per user and a cancel of every other one; the event ids they emit."""
    placed: list[Order] = [await engine.place_order(u, [(item.id, 1)]) for u in users]
    for order in placed[::2]:
        await engine.cancel_order(order.user_id, order.id)
    return {f"{o.id}:paid" for o in placed} | {f"{o.id}:cancelled" for o in placed[::2]}


async def flash_sale(engine: Engine) -> tuple[list[Product], list[int]]:
    """A drop of three sizes (one added later, one restocked and renamed) with a window and
    a limit, a plain product to open tomorrow, one suspended after its orders, and users
    who bought sizes, some twice, one order cancelled; the products and the users."""
    now = datetime.now(UTC).replace(microsecond=0)
    drop = await engine.create_product(
        "sneaker", 90_000, options=[NewOption(name="260", stock=50),
                                    NewOption(name="270", extra_price=5_000, stock=7)],
        sale_starts_at=now - timedelta(hours=1), sale_ends_at=now + timedelta(hours=1),
        max_per_user=3, category="shoes")
    tomorrow = await engine.create_product("boot", 50_000, 10, category="shoes",
                                           sale_starts_at=now + timedelta(days=1))
    plain = await engine.create_product("socks", 1_000, 100)
    await engine.add_option(drop.id, "280", extra_price=1_000, stock=30)
    await engine.update_option(drop.id, drop.options[0].id, stock_delta=-5, name="260mm")
    sizes = [o.id for o in (await engine.product(drop.id)).options]
    users = [1, 2, 3, 4, 5]
    for user in users:
        await engine.charge(user, 1_000_000)
        first = await engine.place_order(user, [(drop.id, 1, sizes[user % 3]), (plain.id, 2)])
        await engine.place_order(user, [(drop.id, user % 2 + 1, sizes[(user + 1) % 3])])
        if user == 3:
            await engine.cancel_order(user, first.id)
    await engine.update_product(plain.id, status="SUSPENDED")
    return [drop, tomorrow, plain], users
