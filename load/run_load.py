"""`make load`: the locust scenario, headless, against a given URL or a private stack.

Without --host it starts `rushorder up` on free ports in a temp data dir, waits until the
API is ready, runs locust, then stops the stack with SIGINT (its clean shutdown). CSV
results go to load/reports/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

LOAD_DIR = Path(__file__).resolve().parent
REPORTS = LOAD_DIR / "reports"
READY_TIMEOUT_S = 120


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    from rushorder.servers import free_port as pick

    return pick()


def ready(url: str) -> bool:
    """GET url answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return 200 <= int(answer.status) < 300
    except OSError:
        return False


def start_stack(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`rushorder up` on free ports; its process and the API's base URL once ready."""
    port = free_port()
    env = {**os.environ, "RUSHORDER_DATA_DIR": str(data_dir), "RUSHORDER_HTTP_PORT": str(port),
           "RUSHORDER_REDIS_PORT": str(free_port()), "RUSHORDER_PG_PORT": str(free_port()),
           "RUSHORDER_PLATFORM_PORT": str(free_port())}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rushorder.cli", "up"], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready(f"{host}/health/ready"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_stack(proc)
            raise SystemExit(f"the stack did not become ready; see {log}")
        time.sleep(0.5)
    return proc, host


def stop_stack(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, like Ctrl-C: `rushorder up` stops its children and servers cleanly."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_locust(args: argparse.Namespace, host: str) -> int:
    """Locust headless with CSV output; its exit code."""
    REPORTS.mkdir(exist_ok=True)
    return subprocess.call([
        sys.executable, "-m", "locust", "-f", str(args.locustfile), "--headless",
        "--host", host, "-u", str(args.users), "-r", str(args.spawn_rate),
        "-t", args.run_time, "--csv", str(REPORTS / "locust"), "--only-summary",
    ])


def parse_args() -> argparse.Namespace:
    """The command line: target, scenario file and load shape."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="API base URL; default: start a private stack")
    parser.add_argument("--locustfile", type=Path, default=LOAD_DIR / "locustfile.py")
    parser.add_argument("--users", type=int, default=50, help="concurrent users (default 50)")
    parser.add_argument("--spawn-rate", type=float, default=10, help="users started per second")
    parser.add_argument("--run-time", default="30s", help="how long, e.g. 30s, 2m")
    return parser.parse_args()


def main() -> int:
    """Run the scenario; the exit code of locust."""
    args = parse_args()
    if not args.locustfile.is_file():
        print(f"no locust scenario yet: {args.locustfile} does not exist", file=sys.stderr)
        return 2
    if args.host:
        return run_locust(args, args.host)
    REPORTS.mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="rushorder-load-"))
    proc, host = start_stack(data_dir, REPORTS / "stack.log")
    try:
        return run_locust(args, host)
    finally:
        stop_stack(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
