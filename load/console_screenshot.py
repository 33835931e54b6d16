"""The console under a sale, as a PNG (docs/console.png): `rushorder up` on free ports, the
flash-sale scenario of `make load` against it, the data platform failing for a few seconds
in the middle (some events become dead letters), and headless Chromium signed in to /ops
(tests/browser/cdp.py) taking the picture near the end.

    python load/console_screenshot.py [--out docs/console.png] [--seconds 60] [--users 400]

Needs Debian's chromium (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

LOAD_DIR = Path(__file__).resolve().parent
REPO = LOAD_DIR.parent
sys.path.insert(0, str(REPO / "tests" / "browser"))

from cdp import Chromium, find_chromium  # noqa: E402
from run_load import start_stack, stop_stack  # noqa: E402

from rushorder.tokens import mint_token  # noqa: E402

SECRET = "console-screenshot-secret-of-32-bytes-or-more"


def platform_outage(platform: str, after_s: float, for_s: float) -> None:
    """Make the mock platform fail for a while, then recover."""
    time.sleep(after_s)
    httpx.post(f"{platform}/control", json={"mode": "fail"}, timeout=5)
    time.sleep(for_s)
    httpx.post(f"{platform}/control", json={"mode": "ok"}, timeout=5)


def main() -> int:
    """Run the sale, take the picture; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "console.png")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--users", type=int, default=400)
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print("no chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    env = {**os.environ, "RUSHORDER_JWT_SECRET": SECRET, "RUSHORDER_API_WORKERS": "2",
           "RUSHORDER_PLATFORM_MAX_ATTEMPTS": "2", "RUSHORDER_LOG_LEVEL": "WARNING"}
    data = Path(tempfile.mkdtemp(prefix="rushorder-shot-"))
    proc, host = start_stack(data, data / "stack.log", env)
    platform = json.loads((data / "stack.json").read_text())["platform_url"]
    try:
        locust = subprocess.Popen([
            sys.executable, "-m", "locust", "-f", str(LOAD_DIR / "locustfile.py"), "--headless",
            "--host", host, "-u", str(args.users), "-r", "100", "-t", f"{args.seconds}s",
            "--only-summary", "--ledger", str(data / "ledger.json"), "FlashSaleUser"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        threading.Thread(target=platform_outage, args=(platform, args.seconds * 0.4, 4),
                         daemon=True).start()
        browser = Chromium(chromium, width=1400, height=1060)
        try:
            browser.goto(f"{host}/ops")
            token = mint_token(SECRET, 1000, admin=True, ttl_s=3600)
            browser.wait_for("!document.getElementById('login').hidden")
            browser.evaluate(f"document.getElementById('token').value = {token!r}")
            browser.evaluate("document.getElementById('login-form').requestSubmit()")
            browser.wait_for("!document.getElementById('console').hidden")
            time.sleep(args.seconds * 0.85)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            browser.screenshot(args.out)
            print(f"wrote {args.out}")
        finally:
            browser.close()
        locust.wait(args.seconds + 60)
    finally:
        stop_stack(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
