"""`make load`: one locust scenario, headless, then a check of the service's books.

Scenarios (load/locustfile.py): `flash` (a flash sale: charges, a first-come coupon, a few
hot products sold out, some cancels) and `browse` (a browse-heavy day: ~90 % catalog and
cart reads, ~10 % orders and checkouts).

Without --host it starts `rushorder up` on free ports in a temp data dir, waits until the
API is ready, runs locust, checks the invariants (load/invariants.py), then stops the
stack with SIGINT (its clean shutdown). Reports go to load/reports/: <scenario>.html
(locust's HTML report), <scenario>_stats.csv etc., <scenario>-ledger.json (every request
that moved money, stock or coupons, with its answer). While locust runs, a live line shows
the API's requests/s, orders/s, refusals by code and 5xx, from its /metrics (load/live.py).
Arguments it does not know are passed to locust (e.g. --hot-stock 300 --coupon-quantity 50).

Exit code: 2 if the stack, the admin setup or locust itself failed, 1 if an invariant
broke, else locust's (1 when it counted failures: a 5xx, no answer, an unexpected refusal).
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

from ledger import Ledger
from live import LiveLine

LOAD_DIR = Path(__file__).resolve().parent
REPORTS = LOAD_DIR / "reports"
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 5  # users finish the task they are in before locust stops
# scenario -> (locust user class, default users, default spawn rate per second)
SCENARIOS: dict[str, tuple[str, int, float]] = {
    "flash": ("FlashSaleUser", 2000, 100),  # locust warns above 100 a second
    "browse": ("BrowseUser", 300, 50),
}


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


def start_stack(data_dir: Path, log: Path,
                env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """`rushorder up` on free ports; its process and the API's base URL once ready."""
    port = free_port()
    env = {**env, "RUSHORDER_DATA_DIR": str(data_dir), "RUSHORDER_HTTP_PORT": str(port),
           "RUSHORDER_REDIS_PORT": str(free_port()), "RUSHORDER_PG_PORT": str(free_port()),
           "RUSHORDER_PLATFORM_PORT": str(free_port()),
           "RUSHORDER_WORKER_METRICS_PORT": str(free_port())}
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


def report_paths(scenario: str) -> tuple[Path, Path, Path]:
    """Where a scenario's HTML report, CSV prefix and ledger go."""
    return (REPORTS / f"{scenario}.html", REPORTS / scenario,
            REPORTS / f"{scenario}-ledger.json")


def run_locust(args: argparse.Namespace, host: str, env: dict[str, str]) -> int:
    """Locust headless with HTML, CSV and ledger output; its exit code."""
    user_class, users, rate = SCENARIOS[args.scenario]
    html, csv_prefix, ledger = report_paths(args.scenario)
    REPORTS.mkdir(exist_ok=True)
    ledger.unlink(missing_ok=True)  # never check a previous run's ledger
    return subprocess.call([
        sys.executable, "-m", "locust", "-f", str(args.locustfile), "--headless",
        "--host", host, "-u", str(args.users or users), "-r", str(args.spawn_rate or rate),
        "-t", args.run_time, "--stop-timeout", str(STOP_TIMEOUT_S),
        "--html", str(html), "--csv", str(csv_prefix), "--only-summary",
        "--ledger", str(ledger), *args.locust_args, user_class,
    ], env=env)


def throughput(ledger: Path) -> str:
    """One line of locust's final totals, as the users' ledger keeps them."""
    try:
        figures = Ledger.load(ledger).figures
        return (f"locust: {figures['requests']:.0f} requests, {figures['failures']:.0f} "
                f"failures, {figures['requests_per_s']:.0f} requests/s, p50 "
                f"{figures['p50_ms']:.0f} ms, p95 {figures['p95_ms']:.0f} ms, "
                f"p99 {figures['p99_ms']:.0f} ms")
    except (OSError, ValueError, KeyError):
        return "locust: no figures (the ledger is missing or incomplete)"


def check(args: argparse.Namespace, host: str, secret: str) -> bool:
    """The invariants, through the API, from the ledger the users wrote."""
    from invariants import run as check_invariants

    ledger = report_paths(args.scenario)[2]
    if not ledger.is_file():
        print(f"invariants: no ledger at {ledger}: locust did not get to the end")
        return False
    return check_invariants(host, ledger, secret)


def run(args: argparse.Namespace, host: str, env: dict[str, str], secret: str) -> int:
    """Locust, then the invariants; the exit code (see the module docstring)."""
    live = LiveLine(host)
    live.start()
    try:
        code = run_locust(args, host, env)
    finally:
        live.finish()
    print(throughput(report_paths(args.scenario)[2]))
    held = check(args, host, secret)
    html = report_paths(args.scenario)[0]
    print(f"reports: {html} and {html.with_suffix('')}_*.csv; locust exit code {code}")
    if code == 2:  # the admin setup failed, or locust itself crashed
        return 2
    return code if held else 1


def parse_args() -> argparse.Namespace:
    """The command line: target, scenario and load shape; the rest goes to locust."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="API base URL; default: start a private stack")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="flash",
                        help="flash (default) or browse")
    parser.add_argument("--locustfile", type=Path, default=LOAD_DIR / "locustfile.py")
    parser.add_argument("--users", type=int, default=None,
                        help="concurrent users (default: flash 2000, browse 300)")
    parser.add_argument("--spawn-rate", type=float, default=None,
                        help="users started per second (default: flash 100, browse 50)")
    parser.add_argument("--run-time", default="30s", help="how long, e.g. 30s, 2m (default 30s)")
    parser.add_argument("--jwt-secret", default=None,
                        help="HS256 secret for the users' tokens, also given to a private "
                             "stack (default: RUSHORDER_JWT_SECRET or the dev secret)")
    args, rest = parser.parse_known_args()
    args.locust_args = rest
    return args


def main() -> int:
    """Run the scenario and check the invariants; the exit code."""
    args = parse_args()
    if not args.locustfile.is_file():
        print(f"no locust scenario yet: {args.locustfile} does not exist", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.jwt_secret:
        env["RUSHORDER_JWT_SECRET"] = args.jwt_secret
    from rushorder.settings import Settings

    secret = Settings.from_env(env).jwt_secret
    if args.host:
        return run(args, args.host, env, secret)
    REPORTS.mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="rushorder-load-"))
    proc, host = start_stack(data_dir, REPORTS / "stack.log", env)
    try:
        return run(args, host, env, secret)
    finally:
        stop_stack(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
