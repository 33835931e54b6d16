"""What the load users did, written down so that the state the API ends in can be checked.

Every request that moves money, stock or coupons is an :class:`Op`, entered in the ledger
*before* it is sent, with its Idempotency-Key and its exact body, and completed with the
answer when one comes. An op without a final answer (no answer, a 5xx, a key still in
flight, a user stopped mid-request) is *unsettled*: the checker replays it with the same
key and body after the run, and the contract makes that return the first answer, or do it
now if the first never arrived. Either way every settled op then says exactly what
happened, and :class:`Tally` adds them up.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

import msgspec

OpKind = Literal["charge", "order", "cancel", "issue"]
IN_FLIGHT = "IDEMPOTENCY_KEY_IN_FLIGHT"


class Op(msgspec.Struct, kw_only=True):
    """One keyed request that moves money, stock or coupons, and its final answer."""

    kind: OpKind
    user: int
    method: str
    path: str
    body: str  # exactly the bytes sent (UTF-8), so that a replay has the same fingerprint
    key: str = msgspec.field(default_factory=lambda: uuid.uuid4().hex)
    status: int | None = None  # None: no answer yet
    answer: dict[str, Any] | None = None
    tries: int = 0
    replayed_after_run: bool = False

    @property
    def code(self) -> str | None:
        """The problem ``code`` of a refusal, if the answer is one."""
        return None if self.answer is None else self.answer.get("code")

    @property
    def settled(self) -> bool:
        """The op has a final answer: 2xx, or a 4xx other than 'key still in flight'."""
        return self.status is not None and 200 <= self.status < 500 and self.code != IN_FLIGHT

    @property
    def done(self) -> bool:
        """The op was carried out (a 2xx answer)."""
        return self.status is not None and 200 <= self.status < 300


class Ledger(msgspec.Struct, kw_only=True):
    """One run: what was set up, which users took part, every keyed op, every status seen."""

    scenario: str
    host: str
    user_base: int  # user ids of this run are user_base + 1, user_base + 2, ...
    setup: dict[str, Any] = msgspec.field(default_factory=dict)
    users: list[int] = msgspec.field(default_factory=list)
    ops: list[Op] = msgspec.field(default_factory=list)
    # "POST /api/v1/orders" -> {"201": n, "409": n, ...}; status "0" means no answer
    statuses: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    # what the users saw go wrong during the run (a replay that differed, a wrong balance)
    anomalies: list[str] = msgspec.field(default_factory=list)
    # locust's totals at the end: requests, failures, requests_per_s, p50_ms, p95_ms, p99_ms
    figures: dict[str, float] = msgspec.field(default_factory=dict)

    def count_status(self, name: str, status: int) -> None:
        """Tally one answer of a request named ``name``."""
        by_status = self.statuses.setdefault(name, {})
        by_status[str(status)] = by_status.get(str(status), 0) + 1

    def server_errors(self) -> dict[str, int]:
        """Requests answered 5xx, by request name."""
        found = {name: sum(n for status, n in counts.items() if int(status) >= 500)
                 for name, counts in self.statuses.items()}
        return {name: n for name, n in found.items() if n}

    def unsettled(self) -> list[Op]:
        """Ops whose outcome is not known yet."""
        return [op for op in self.ops if not op.settled]

    def save(self, path: Path) -> None:
        """Write the ledger as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(msgspec.json.encode(self))

    @staticmethod
    def load(path: Path) -> Ledger:
        """Read a ledger written by :meth:`save`."""
        return msgspec.json.decode(path.read_bytes(), type=Ledger)


class Tally(msgspec.Struct, kw_only=True):
    """Money, units and coupons as the settled ops' answers tell them."""

    charged: dict[int, int]  # user -> won charged
    paid: dict[int, int]  # user -> won paid for orders
    refunded: dict[int, int]  # user -> won given back by cancels
    sold: dict[int, int]  # product -> units in paid orders minus units of cancelled ones
    issued: dict[int, dict[int, list[int]]]  # coupon -> user -> issued coupon ids received
    orders: int
    cancels: int

    @staticmethod
    def of(ops: list[Op]) -> Tally:
        """Add up the ops that were carried out."""
        charged: Counter[int] = Counter()
        paid: Counter[int] = Counter()
        refunded: Counter[int] = Counter()
        sold: Counter[int] = Counter()
        issued: defaultdict[int, defaultdict[int, list[int]]] = defaultdict(
            lambda: defaultdict(list))
        orders = cancels = 0
        for op in ops:
            if not op.done or op.answer is None:
                continue
            answer = op.answer
            if op.kind == "charge":
                charged[op.user] += answer["charged"]
            elif op.kind == "order":
                orders += 1
                paid[op.user] += answer["paid_amount"]
                for line in answer["items"]:
                    sold[line["product_id"]] += line["quantity"]
            elif op.kind == "cancel":
                cancels += 1
                refunded[op.user] += answer["paid_amount"]
                for line in answer["items"]:
                    sold[line["product_id"]] -= line["quantity"]
            elif op.kind == "issue":
                issued[answer["coupon_id"]][op.user].append(answer["id"])
        return Tally(charged=dict(charged), paid=dict(paid), refunded=dict(refunded),
                     sold=dict(sold), orders=orders, cancels=cancels,
                     issued={coupon: dict(users) for coupon, users in issued.items()})

    def expected_balance(self, user: int) -> int:
        """What the user's balance must be: charges - payments + refunds."""
        return (self.charged.get(user, 0) - self.paid.get(user, 0)
                + self.refunded.get(user, 0))
