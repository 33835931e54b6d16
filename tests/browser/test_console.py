"""The console in a real browser: `rushorder up` on free ports, /ops in headless Chromium
(Debian's ``chromium``, driven over the DevTools protocol: ``cdp.py``), a sale placed
through the API; the page shows it, the dead letters it causes, and empties them with its
Replay button, each event reaching the platform once; its login is a server-side session
(an HttpOnly, SameSite=Strict cookie holding a random id, not the token) that its Log out
button ends, so that a copy of the cookie stops working.

Skipped where no Chromium is installed (``apt-get install chromium``; ``.ci/run`` does).
Set ``RUSHORDER_CONSOLE_SCREENSHOT=path.png`` to keep a screenshot of the page.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rushorder.servers import free_port
from rushorder.tokens import mint_token
from tests.browser.cdp import Chromium, find_chromium

REPO = Path(__file__).resolve().parents[2]
SECRET = "browser-tests-secret-of-more-than-32-bytes"
CHROMIUM = find_chromium()

pytestmark = [pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium installed (apt-get install chromium): the console's "
                             "browser test needs Debian's chromium"),
    pytest.mark.servers]  # `rushorder up` starts its own Redis and Postgres


class Stack:
    """`rushorder up` in a temp data dir, on free ports, its output in a log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.api = f"http://127.0.0.1:{free_port()}"
        self.platform = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUSHORDER_")}
        env.update({
            "RUSHORDER_DATA_DIR": str(root / "data"), "RUSHORDER_JWT_SECRET": SECRET,
            "RUSHORDER_HTTP_PORT": self.api.rsplit(":", 1)[1],
            "RUSHORDER_PLATFORM_PORT": self.platform.rsplit(":", 1)[1],
            "RUSHORDER_REDIS_PORT": str(free_port()), "RUSHORDER_PG_PORT": str(free_port()),
            "RUSHORDER_WORKER_METRICS_PORT": str(free_port()), "RUSHORDER_API_WORKERS": "2",
            # a failing platform dead-letters at once, and a short timeout keeps it brisk
            "RUSHORDER_PLATFORM_MAX_ATTEMPTS": "1", "RUSHORDER_PLATFORM_TIMEOUT_S": "1",
            "RUSHORDER_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
        self.log = root / "stack.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "rushorder.cli", "up"], env=env,
                                         cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until the API is ready and the workers have beaten."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                if httpx.get(f"{self.api}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"the stack did not get ready: {self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        """Ctrl-C, as a person would: `up` stops everything it started."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The whole stack, for this module."""
    root = Path(tempfile.mkdtemp(prefix="rushorder-browser-"))
    running = Stack(root)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Chromium]:
    """A headless Chromium."""
    assert CHROMIUM is not None
    chromium = Chromium(CHROMIUM)
    yield chromium
    chromium.close()


def bearer(user: int, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user, admin=admin, ttl_s=3600)}"}


def sale(api: httpx.Client, product: int, buyers: range) -> list[int]:
    """Each buyer charges and orders one unit; the statuses."""
    statuses = []
    for user in buyers:
        assert api.post("/api/v1/balance/charge", json={"amount": 10_000},
                        headers=bearer(user)).status_code == 200
        order = {"items": [{"product_id": product, "quantity": 1}]}
        statuses.append(api.post("/api/v1/orders", json=order, headers=bearer(user)).status_code)
    return statuses


def event_ids(platform: str) -> list[str]:
    return [e["event_id"] for e in httpx.get(f"{platform}/events", timeout=5).json()["items"]]


def test_the_console_shows_a_sale_and_its_replay_empties_the_dead_letters(
    stack: Stack, browser: Chromium,
) -> None:
    admin = bearer(1000, admin=True)
    browser.goto(f"{stack.api}/ops")
    browser.wait_for("!document.getElementById('login').hidden", what="the login form")
    assert browser.evaluate("document.getElementById('console').hidden") is True

    token = admin["Authorization"].removeprefix("Bearer ")
    browser.evaluate(f"document.getElementById('token').value = {token!r}")
    browser.evaluate("document.getElementById('login-form').requestSubmit()")
    browser.wait_for("!document.getElementById('console').hidden", what="the console")
    assert browser.evaluate("document.cookie").startswith("rushorder_console_csrf=")  # not
    # the token: HttpOnly keeps it from the page

    with httpx.Client(base_url=stack.api, timeout=30) as api:
        made = api.post("/api/v1/admin/products", headers=admin,
                        json={"name": "flash deal", "price": 1_000, "stock": 10})
        product = made.json()["id"]
        assert sale(api, product, range(1, 13)) == [201] * 10 + [409] * 2
        browser.wait_for("document.getElementById('placed-window').textContent === '10'",
                         what="the 10 orders on the page")
        browser.wait_for("document.getElementById('refused-window').textContent"
                         ".includes('OUT_OF_STOCK 2')", what="the 2 refusals")
        assert "flash deal" in browser.text("top") and "10" in browser.text("top")
        browser.wait_for("document.querySelectorAll('#workers .dot.alive').length === 2",
                         what="both worker processes alive")
        browser.wait_for("Number(document.getElementById('dead-count').textContent) === 0")

        httpx.post(f"{stack.platform}/control", json={"mode": "fail"}, timeout=5)
        api.patch(f"/api/v1/admin/products/{product}", headers=admin, json={"stock_delta": 5})
        assert sale(api, product, range(13, 18)) == [201] * 5
        browser.wait_for("document.getElementById('dead-count').textContent === '5'",
                         what="5 dead letters on the page")
        shot = os.environ.get("RUSHORDER_CONSOLE_SCREENSHOT")
        if shot:
            browser.screenshot(Path(shot))

        httpx.post(f"{stack.platform}/control", json={"mode": "ok"}, timeout=5)
        browser.evaluate("document.getElementById('replay').click()")
        browser.wait_for("document.getElementById('replay-result').textContent"
                         ".startsWith('replayed: 5 delivered')", what="the replay's answer")
        browser.wait_for("document.getElementById('dead-count').textContent === '0'",
                         what="no dead letter left on the page")
    ids = event_ids(stack.platform)
    assert len(ids) == len(set(ids)) == 15  # every paid order once, the replayed included
    browser.wait_for("document.getElementById('placed-window').textContent === '15'",
                     what="all 15 orders on the page (it refreshes every second or two)")
    assert browser.text("problems") == ""

    # The login is a session of the server's: the cookie holds an id, never the token.
    cookies = {c["name"]: c for c in browser.send("Network.getAllCookies")["cookies"]}
    session = cookies["rushorder_console"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert len(session["value"]) == 43 and session["value"] not in token
    stolen = {"rushorder_console": session["value"]}
    with httpx.Client(base_url=stack.api, cookies=stolen, timeout=10) as thief:
        assert thief.get("/api/v1/admin/ops").status_code == 200
        browser.evaluate("document.getElementById('logout').click()")
        browser.wait_for("!document.getElementById('login').hidden", what="the login again")
        assert thief.get("/api/v1/admin/ops").status_code == 401  # the logout ended it
