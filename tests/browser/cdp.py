"""A small client of Chromium's DevTools protocol: start a headless Chromium, drive one page.

Debian's ``chromium`` (no browser is downloaded at install time), started as these
machines need it: headless, no sandbox (tests run as root), no GPU, and nothing that
reaches for the network on its own (the machines have none). The DevTools port is chosen
by Chromium (``--remote-debugging-port=0``) and read from ``DevToolsActivePort`` in its
fresh profile directory; commands and their answers go over one websocket
(``websocket-client``), events that arrive meanwhile are dropped.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
         "--remote-debugging-port=0", "--remote-allow-origins=*")


class BrowserError(RuntimeError):
    """Raised when Chromium does not start or a DevTools command fails."""


def find_chromium() -> str | None:
    """The Chromium binary on PATH, if any."""
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class Chromium:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1000) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="rushorder-chromium-"))
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.port = self._devtools_port()
        self.ws = websocket.create_connection(self._page_socket(), timeout=30,
                                              suppress_origin=True)
        self._ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _devtools_port(self, timeout_s: float = 30) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                error = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr \
                    else ""
                raise BrowserError(f"chromium exited with {self.proc.returncode}: {error[-2000:]}")
            if marker.exists() and (lines := marker.read_text().split()):
                return int(lines[0])
            time.sleep(0.05)
        raise BrowserError("chromium did not open its DevTools port")

    def _page_socket(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            targets = json.load(r)
        return next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that come first are skipped)."""
        command_id = next(self._ids)
        self.ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") != command_id:
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            return message.get("result", {})  # type: ignore[no-any-return]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str, timeout_s: float = 30) -> None:
        """Open ``url`` and wait until its document has loaded."""
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href === "
                      f"{json.dumps(url)}", timeout_s, "the page to load")

    def wait_for(self, expression: str, timeout_s: float = 30, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        value: Any = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what or expression}"
                             f" (last value {value!r})")

    def text(self, element_id: str) -> str:
        """The text of the element with this id."""
        return str(self.evaluate(f"document.getElementById({json.dumps(element_id)})"
                                 ".textContent"))

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        """Close the page's socket, stop Chromium, remove its profile."""
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)

