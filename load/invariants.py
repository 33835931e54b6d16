"""After a load run: did the service keep its books? Checked through the public API only.

Reads the ledger the locust users wrote (load/ledger.py), first settles every op that had
no final answer by sending it again with its Idempotency-Key and body (the contract makes
that return the first answer, or do it now if the first never arrived), then checks:

* no 5xx anywhere (the users' requests and this checker's);
* stock: for every product the run put up, initial - remaining == units sold, counted from
  the answers of paid orders minus those of cancels, and remaining >= 0;
* money: for every user of the run, charges - payments + refunds == its GET /balance, and
  so for the sums;
* coupons: issued <= total quantity, never twice to one user (by the answers and by each
  user's GET /users/me/coupons), and the coupon's ``remaining`` agrees;
* nothing odd seen during the run (a replay that answered differently, a balance or cart
  that did not read back what the user's own answers said).

Usage: python load/invariants.py --host URL --ledger load/reports/flash-ledger.json
Exit code 1 if an invariant broke.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ledger import Ledger, Op, Tally  # noqa: E402

from rushorder.settings import Settings  # noqa: E402
from rushorder.tokens import mint_token  # noqa: E402

CONCURRENCY = 32
SETTLE_TRIES = 10
SETTLE_PAUSE_S = 0.5
SHOW = 5  # examples shown per broken invariant
T = TypeVar("T")


class Finding(msgspec.Struct, frozen=True):
    """One invariant: held or not, and the figures behind the verdict."""

    name: str
    held: bool
    detail: str


class Api:
    """The public API as each user of the run sees it; counts the 5xx it gets."""

    def __init__(self, host: str, secret: str) -> None:
        self.secret = secret
        self.client = httpx.AsyncClient(base_url=host, timeout=30,
                                        limits=httpx.Limits(max_connections=CONCURRENCY))
        self.gate = asyncio.Semaphore(CONCURRENCY)
        self.server_errors: list[str] = []
        self._tokens: dict[int, str] = {}

    def auth(self, user: int) -> dict[str, str]:
        """A bearer header for ``user``."""
        if user not in self._tokens:
            self._tokens[user] = mint_token(self.secret, user, ttl_s=3600)
        return {"Authorization": f"Bearer {self._tokens[user]}"}

    async def send(self, method: str, path: str, user: int | None = None, body: str = "",
                   key: str | None = None) -> tuple[int, Any]:
        """One request; its status and JSON answer (None if it had none)."""
        headers = self.auth(user) if user is not None else {}
        if body:
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.gate:
            answer = await self.client.request(method, path, headers=headers,
                                               content=body.encode() or None)
        if answer.status_code >= 500:
            self.server_errors.append(f"{method} {path}: {answer.status_code}")
        try:
            return answer.status_code, msgspec.json.decode(answer.content or b"null")
        except msgspec.DecodeError:
            return answer.status_code, {"text": answer.text[:200]}

    async def get(self, path: str, user: int | None = None) -> Any:
        """A GET that must answer 200; its JSON."""
        status, answer = await self.send("GET", path, user)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {answer}")
        return answer

    async def close(self) -> None:
        """Close the connections."""
        await self.client.aclose()


async def each(items: list[T], fetch: Callable[[T], Awaitable[Any]]) -> list[Any]:
    """``fetch`` of every item, CONCURRENCY at a time (the Api's gate bounds it)."""
    return list(await asyncio.gather(*(fetch(item) for item in items)))


# ---------------------------------------------------------------------------------------
# Settling ops without a final answer
# ---------------------------------------------------------------------------------------


async def settle_one(api: Api, op: Op) -> None:
    """Send the op again with its key until it has a final answer (or we give up)."""
    for _ in range(SETTLE_TRIES):
        try:
            op.status, op.answer = await api.send(op.method, op.path, op.user, op.body, op.key)
        except httpx.HTTPError:
            op.status, op.answer = None, None
        op.tries += 1
        op.replayed_after_run = True
        if op.settled:
            return
        await asyncio.sleep(SETTLE_PAUSE_S)


async def settle(api: Api, ledger: Ledger) -> Finding:
    """Every op gets a final answer; one that cannot leaves the books in doubt."""
    pending = ledger.unsettled()
    for op in pending:  # in ledger order: a user's ops were sent one after another
        await settle_one(api, op)
    left = ledger.unsettled()
    examples = "; ".join(f"{op.kind} {op.path} key {op.key}: {op.status} {op.code}"
                         for op in left[:SHOW])
    return Finding("every money/stock/coupon request has a final answer", not left,
                   f"{len(ledger.ops)} keyed requests, {len(pending)} settled after the run "
                   f"by sending them again with their Idempotency-Key, {len(left)} still "
                   f"without one" + (f" ({examples})" if left else ""))


# ---------------------------------------------------------------------------------------
# The invariants
# ---------------------------------------------------------------------------------------


def products_of(ledger: Ledger) -> list[dict[str, Any]]:
    """The products the run put up, with their initial stock."""
    return [*ledger.setup.get("hot_products", []), *ledger.setup.get("catalog", [])]


async def check_stock(api: Api, ledger: Ledger, tally: Tally) -> Finding:
    """initial - remaining == sold (paid orders minus cancels), and remaining >= 0."""
    products = products_of(ledger)
    now = await each(products, lambda p: api.get(f"/api/v1/products/{p['id']}"))
    lines, broken = [], []
    for before, after in zip(products, now, strict=True):
        sold = tally.sold.get(before["id"], 0)
        gone = before["stock"] - after["stock"]
        if gone != sold or after["stock"] < 0:
            broken.append(f"product {before['id']}: initial {before['stock']}, remaining "
                          f"{after['stock']}, sold by the answers {sold}")
        if before in ledger.setup.get("hot_products", []):
            lines.append(f"#{before['id']} {before['stock']}-{after['stock']}={gone} vs {sold}")
    total = sum(p["stock"] for p in products) - sum(p["stock"] for p in now)
    detail = (f"{len(products)} products, {total} units gone, "
              f"{sum(tally.sold.get(p['id'], 0) for p in products)} sold by the answers "
              f"({tally.orders} orders, {tally.cancels} cancels)")
    if lines:
        detail += "; hot: initial-remaining=gone vs sold: " + ", ".join(lines)
    if broken:
        detail += "; BROKEN: " + "; ".join(broken[:SHOW])
    return Finding("stock: initial - remaining == sold - cancelled", not broken, detail)


async def check_money(api: Api, ledger: Ledger, tally: Tally) -> Finding:
    """charged - paid + refunded == balance, per user and in sum."""
    users = ledger.users
    answers = await each(users, lambda u: api.get("/api/v1/balance", u))
    balances = {u: a["balance"] for u, a in zip(users, answers, strict=True)}
    wrong = [f"user {u}: balance {balances[u]}, expected {tally.expected_balance(u)}"
             for u in users if balances[u] != tally.expected_balance(u)]
    charged, paid = sum(tally.charged.values()), sum(tally.paid.values())
    refunded, held = sum(tally.refunded.values()), sum(balances.values())
    expected = charged - paid + refunded
    detail = (f"{len(users)} users: charged {charged:,} - paid {paid:,} + refunded "
              f"{refunded:,} = {expected:,} won; balances sum to {held:,} won; "
              f"{len(wrong)} users off")
    if wrong:
        detail += " (" + "; ".join(wrong[:SHOW]) + ")"
    return Finding("money conserved", expected == held and not wrong, detail)


async def issued_to(api: Api, user: int, coupon_id: int) -> list[int]:
    """The issued-coupon ids of ``coupon_id`` that ``user`` holds, by its coupon list."""
    found, cursor = [], ""
    while True:
        page = await api.get(f"/api/v1/users/me/coupons?limit=100&cursor={cursor}", user)
        found += [c["id"] for c in page["items"] if c["coupon_id"] == coupon_id]
        if not page["next_cursor"]:
            return found
        cursor = page["next_cursor"]


async def check_coupon(api: Api, ledger: Ledger, tally: Tally) -> Finding | None:
    """issued <= quantity, never twice to a user, remaining == quantity - issued."""
    coupon = ledger.setup.get("coupon")
    if coupon is None:
        return None
    by_answers = tally.issued.get(coupon["id"], {})
    lists = await each(ledger.users, lambda u: issued_to(api, u, coupon["id"]))
    held = dict(zip(ledger.users, lists, strict=True))
    live = await api.get(f"/api/v1/coupons/{coupon['id']}")
    issued = sum(len(ids) for ids in by_answers.values())
    listed = sum(len(ids) for ids in held.values())
    twice = [u for u in ledger.users if len(held[u]) > 1 or len(by_answers.get(u, [])) > 1]
    differ = [u for u in ledger.users if sorted(held[u]) != sorted(by_answers.get(u, []))]
    quantity = coupon["total_quantity"]
    ok = (issued <= quantity and not twice and not differ
          and live["remaining"] == quantity - issued and listed == issued)
    detail = (f"quantity {quantity}, issued by the answers {issued}, held by the users' "
              f"lists {listed}, remaining {live['remaining']}; {len(twice)} users with two, "
              f"{len(differ)} users whose list differs from their answers")
    if twice or differ:
        detail += f" (users {sorted({*twice, *differ})[:SHOW]})"
    return Finding("coupons: issued <= quantity, at most one per user", ok, detail)


def check_errors(ledger: Ledger, api: Api) -> Finding:
    """No request of the run, nor of this check, was answered 5xx."""
    during = ledger.server_errors()
    total = sum(during.values()) + len(api.server_errors)
    requests = sum(sum(by_status.values()) for by_status in ledger.statuses.values())
    no_answer = sum(by_status.get("0", 0) for by_status in ledger.statuses.values())
    detail = (f"{requests} requests during the run, {sum(during.values())} answered 5xx "
              f"{during or ''}; {len(api.server_errors)} 5xx while checking; "
              f"{no_answer} got no answer")
    return Finding("no 5xx", total == 0, detail)


def check_anomalies(ledger: Ledger) -> Finding:
    """What the users themselves saw go wrong during the run."""
    found = ledger.anomalies
    detail = f"{len(found)} seen" + (f": {'; '.join(found[:SHOW])}" if found else "")
    return Finding("users read back their own writes; replays answered the same", not found,
                   detail)


async def checked(name: str, checking: Awaitable[Finding | None]) -> Finding | None:
    """A check's finding; one that could not be made (the API refused a read) is broken."""
    try:
        return await checking
    except (RuntimeError, httpx.HTTPError, KeyError, TypeError) as exc:
        return Finding(name, False, f"could not be checked: {exc!r}")


async def check(host: str, ledger: Ledger, secret: str) -> list[Finding]:
    """Settle the ledger, then check every invariant through the API."""
    api = Api(host, secret)
    try:
        findings = [await checked("settle", settle(api, ledger))]
        tally = Tally.of(ledger.ops)
        findings += [await checked("stock", check_stock(api, ledger, tally)),
                     await checked("money", check_money(api, ledger, tally)),
                     await checked("coupons", check_coupon(api, ledger, tally)),
                     check_anomalies(ledger), check_errors(ledger, api)]
        return [f for f in findings if f is not None]
    finally:
        await api.close()


def answers(ledger: Ledger) -> str:
    """How the keyed requests were answered: per kind, done or refused with which code."""
    counts = Counter(f"{op.kind} {'ok' if op.done else op.code or op.status}" for op in ledger.ops)
    return "answers: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))


def report(findings: list[Finding]) -> str:
    """The verdicts, one block per invariant."""
    lines = ["invariants:"]
    for f in findings:
        lines.append(f"  [{'held' if f.held else 'BROKEN'}] {f.name}")
        lines.append(f"      {f.detail}")
    broken = sum(not f.held for f in findings)
    lines.append("all invariants held" if not broken else f"{broken} invariant(s) BROKEN")
    return "\n".join(lines)


def run(host: str, ledger_path: Path, secret: str) -> bool:
    """Check a saved ledger, print the report, save the settled ledger; True if all held."""
    ledger = Ledger.load(ledger_path)
    if not ledger.users:
        why = "; ".join(ledger.anomalies) or "no user started"
        print(f"invariants: not checked, nothing ran ({why})")
        return False
    findings = asyncio.run(check(host, ledger, secret))
    ledger.save(ledger_path)  # with the answers the settling got
    print(answers(ledger))
    print(report(findings))
    return all(f.held for f in findings)


def main() -> int:
    """Command line: check a ledger against a running API."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True, help="API base URL")
    parser.add_argument("--ledger", type=Path, required=True, help="the run's ledger (JSON)")
    parser.add_argument("--jwt-secret", default=None,
                        help="HS256 secret (default: RUSHORDER_JWT_SECRET or the dev secret)")
    args = parser.parse_args()
    secret = args.jwt_secret or Settings.from_env().jwt_secret
    return 0 if run(args.host, args.ledger, secret) else 1


if __name__ == "__main__":
    sys.exit(main())
