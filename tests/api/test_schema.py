"""Schemathesis over /schema: generated and mutated requests to every operation find no
5xx, and every answer matches the documented status, content type, headers and schema.

The stateful phase follows the links the document declares (product -> order and cart,
order -> cancel, coupon -> issue -> order, ...; schemathesis' own guessed links are turned
off, so it is ours that are tested), and so also reaches the business rules: it places and
cancels orders and is refused by the rules with 409s, not only by validation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx

from tests.api.support import ServerProcess

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,negative_data_rejection")
# After a 201 the linked read must find the resource; after a DELETE it must not.
STATEFUL_CHECKS = f"{CHECKS},ensure_resource_availability,use_after_free"
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
SEED = "20261122"
# Longer scenarios (product -> order -> cancel needs three steps), over our links only.
NO_GUESSED_LINKS = """
[phases.stateful]
max-steps = 12
[phases.stateful.inference]
algorithms = []
"""
NUMERIC_ID = re.compile(r"/[0-9]+(?=/|$)")

Answers = Counter[tuple[str, str, int]]


def schemathesis(url: str, token: str, workdir: Path, *args: str, config: str = "") -> Answers:
    """Run ``st run`` on the API's /schema as ``token``'s holder, with ``config`` as its
    schemathesis.toml; assert that it found no failure and answer how often each (method,
    path, status) was answered."""
    har, toml = workdir / "run.har", workdir / "schemathesis.toml"
    toml.write_text(config)
    run = subprocess.run(
        [str(Path(sys.executable).with_name("st")), "--config-file", str(toml), "run",
         f"{url}/schema", *args,
         "--seed", SEED, "--workers", "2", "--header", f"Authorization: Bearer {token}",
         "--request-timeout", "10", "--no-color", "--report", "har",
         "--report-har-path", str(har)],
        capture_output=True, text=True, cwd=workdir, timeout=600,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "generated" in run.stdout
    return answers(har)


def answers(har: Path) -> Answers:
    """How often each (method, path with numeric ids as {id}, status) was answered."""
    entries = json.loads(har.read_text())["log"]["entries"]
    return Counter((entry["request"]["method"],
                    NUMERIC_ID.sub("/{id}", httpx.URL(entry["request"]["url"]).path),
                    entry["response"]["status"]) for entry in entries)


def fund(url: str, token: str, amount: int) -> None:
    """Charge ``amount`` won to the token's user, so that the orders it places can be paid."""
    for _ in range(amount // 1_000_000):
        resp = httpx.post(f"{url}/api/v1/balance/charge", json={"amount": 1_000_000},
                          headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    api_servers: list[ServerProcess], new_user, tmp_path: Path
) -> None:
    token = new_user(admin=True).token  # an admin is also a user: every route is reachable
    schemathesis(api_servers[0].url, token, tmp_path, "--checks", CHECKS,
                 "--phases", "examples,coverage,fuzzing", "--max-examples", "15")


def test_schemathesis_follows_the_links_into_the_business_rules(
    api_servers: list[ServerProcess], new_user, tmp_path: Path
) -> None:
    token = new_user(admin=True).token
    fund(api_servers[0].url, token, 10_000_000)
    # The time budget, not the number of scenarios, bounds the phase: a scenario the changed
    # state makes unrepeatable ends a round of scenarios early, and --max-time starts another.
    seen = schemathesis(api_servers[0].url, token, tmp_path, "--checks", STATEFUL_CHECKS,
                        "--phases", "stateful", "--max-time", "20", "--max-examples", "1000",
                        config=NO_GUESSED_LINKS)
    by_status = Counter[int]()
    for (_, _, status), count in seen.items():
        by_status[status] += count
    placed = seen["POST", "/api/v1/orders", 201] + seen["POST", "/api/v1/cart/checkout", 201]
    cancels = {status: seen["POST", "/api/v1/orders/{id}/cancel", status] for status in (200, 409)}
    print(f"stateful: {sum(seen.values())} requests, by status {sorted(by_status.items())}; "
          f"orders placed {placed}, cancels {cancels}, coupons issued "
          f"{seen['POST', '/api/v1/coupons/{id}/issue', 201]}")
    assert placed >= 1
    assert sum(cancels.values()) >= 1  # a cancel reached an order it placed
    assert by_status[409] >= 1  # refused by a business rule, not by validation
