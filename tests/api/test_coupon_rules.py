"""Issue 28 over HTTP: a coupon's rules (minimum order, cap, description) from create to
order, and the two coupon lists (public: open for issue now; admin: all, with counts)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from engine import limits
from tests.api.actors import Actor, assert_problem
from tests.api.support import rfc3339

COUPONS, ADMIN_COUPONS = "/api/v1/coupons", "/api/v1/admin/coupons"


@pytest.fixture
def ruled_coupon(client: httpx.AsyncClient, admin: Actor) -> Callable[..., Awaitable[dict]]:
    """A coupon created over HTTP with the fields given (defaults: 50% off, 10 units,
    from an hour ago to an hour from now)."""

    async def make(start_s: float = -3600, end_s: float = 3600, **fields: Any) -> dict:
        now = datetime.now(UTC)
        body = {"name": "ruled", "discount_type": "PERCENT", "discount_value": 50,
                "total_quantity": 10, "valid_from": rfc3339(now + timedelta(seconds=start_s)),
                "valid_until": rfc3339(now + timedelta(seconds=end_s))} | fields
        resp = await client.post(ADMIN_COUPONS, headers=admin.headers, json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    return make


async def test_rules_are_answered_by_create_read_issue_and_the_users_list(
    client: httpx.AsyncClient, ruled_coupon, new_user
) -> None:
    made = await ruled_coupon(min_order_amount=20_000, max_discount_amount=3_000,
                              description="50% off orders of 20,000 won, up to 3,000")
    rules = {"min_order_amount": 20_000, "max_discount_amount": 3_000,
             "description": "50% off orders of 20,000 won, up to 3,000"}
    assert made.items() >= rules.items()
    assert (await client.get(f"{COUPONS}/{made['id']}")).json() == made
    user = new_user()
    issued = (await client.post(f"{COUPONS}/{made['id']}/issue", headers=user.headers)).json()
    assert issued.items() >= rules.items()
    mine = (await client.get("/api/v1/users/me/coupons", headers=user.headers)).json()
    assert mine["items"] == [issued]


async def test_an_old_clients_coupon_answers_null_rules_and_an_empty_description(
    new_coupon, client: httpx.AsyncClient, new_user
) -> None:
    made = await new_coupon()
    unset = {"min_order_amount": None, "max_discount_amount": None, "description": ""}
    assert made.items() >= unset.items()
    issued = (await client.post(f"{COUPONS}/{made['id']}/issue",
                                headers=new_user().headers)).json()
    assert issued.items() >= unset.items()


@pytest.mark.parametrize(("fields", "named"), [
    ({"min_order_amount": 0}, "min_order_amount"),
    ({"min_order_amount": limits.ORDER_AMOUNT.high + 1}, "min_order_amount"),
    ({"min_order_amount": "5000"}, "min_order_amount"),
    ({"max_discount_amount": 0}, "max_discount_amount"),
    ({"discount_type": "FIXED", "discount_value": 500, "max_discount_amount": 100},
     "max_discount_amount"),
    ({"description": "x" * 1_001}, "description"),
    ({"description": "a\nb"}, "description"),
    ({"description": "a\n"}, "description"),
    ({"description": 5}, "description"),
])
async def test_a_bad_rule_is_400_naming_it(
    client: httpx.AsyncClient, admin: Actor, fields: dict, named: str
) -> None:
    now = datetime.now(UTC)
    body = {"name": "bad", "discount_type": "PERCENT", "discount_value": 10,
            "total_quantity": 1, "valid_from": rfc3339(now),
            "valid_until": rfc3339(now + timedelta(hours=1))} | fields
    resp = await client.post(ADMIN_COUPONS, headers=admin.headers, json=body)
    doc = assert_problem(resp, 400, "VALIDATION_ERROR", names=named)
    assert doc["detail"].startswith(named)


async def test_nulls_and_an_empty_description_mean_no_rules(ruled_coupon) -> None:
    made = await ruled_coupon(discount_type="FIXED", discount_value=100, min_order_amount=None,
                              max_discount_amount=None, description="")
    assert (made["min_order_amount"], made["max_discount_amount"], made["description"]) == (
        None, None, "")


async def _order(client: httpx.AsyncClient, user: Actor, product: dict, quantity: int,
                 issued_id: int) -> httpx.Response:
    return await client.post("/api/v1/orders", headers=user.headers, json={
        "items": [{"product_id": product["id"], "quantity": quantity}],
        "issued_coupon_id": issued_id})


async def test_an_order_below_the_minimum_is_409_coupon_not_usable_with_the_minimum(
    client: httpx.AsyncClient, ruled_coupon, new_product, funded_user
) -> None:
    made = await ruled_coupon(discount_type="FIXED", discount_value=1_000,
                              min_order_amount=5_000)
    product, user = await new_product(price=1_000), await funded_user(10_000)
    issued = (await client.post(f"{COUPONS}/{made['id']}/issue", headers=user.headers)).json()
    doc = assert_problem(await _order(client, user, product, 4, issued["id"]), 409,
                         "COUPON_NOT_USABLE", names="5000")
    assert doc["context"] == {"issued_coupon_id": issued["id"], "min_order_amount": 5_000}
    resp = await _order(client, user, product, 5, issued["id"])
    assert resp.status_code == 201, resp.text
    assert (resp.json()["discount_amount"], resp.json()["paid_amount"]) == (1_000, 4_000)


async def test_a_percent_discount_stops_at_its_cap(
    client: httpx.AsyncClient, ruled_coupon, new_product, funded_user
) -> None:
    made = await ruled_coupon(max_discount_amount=3_000)
    product, user = await new_product(price=2_000), await funded_user(20_000)
    issued = (await client.post(f"{COUPONS}/{made['id']}/issue", headers=user.headers)).json()
    order = (await _order(client, user, product, 5, issued["id"])).json()
    assert (order["total_amount"], order["discount_amount"], order["paid_amount"]) == (
        10_000, 3_000, 7_000)


# -- the lists ------------------------------------------------------------------------------


async def _walk(client: httpx.AsyncClient, url: str, after: int, limit: int,
                headers: dict | None = None) -> list[dict]:
    """Every item of a list after id ``after``, page by page."""
    items: list[dict] = []
    cursor: str | None = str(after)
    while cursor is not None:
        resp = await client.get(url, params={"limit": limit, "cursor": cursor},
                                headers=headers or {})
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
    return items


async def test_the_public_list_holds_the_coupons_open_for_issue_now_with_live_remaining(
    client: httpx.AsyncClient, ruled_coupon, new_user
) -> None:
    # 40 units: every group holds some (the live remaining adds the groups' to the reserve's)
    first = await ruled_coupon(total_quantity=40, description="open")
    later = await ruled_coupon(start_s=3600, end_s=7200)
    ended = await ruled_coupon(start_s=-7200, end_s=-3600)
    sold_out = await ruled_coupon(total_quantity=1)
    await client.post(f"{COUPONS}/{sold_out['id']}/issue", headers=new_user().headers)
    await client.post(f"{COUPONS}/{first['id']}/issue", headers=new_user().headers)
    last = await ruled_coupon()
    listed = {c["id"]: c for c in await _walk(client, COUPONS, first["id"] - 1, 1)
              if c["id"] <= last["id"]}
    assert sorted(listed) == [first["id"], last["id"]]
    assert listed[first["id"]] == first | {"remaining": 39}
    assert not {later["id"], ended["id"], sold_out["id"]} & listed.keys()


async def test_the_public_list_needs_no_token_and_pages_by_id(
    client: httpx.AsyncClient, ruled_coupon
) -> None:
    made = [await ruled_coupon() for _ in range(3)]
    resp = await client.get(COUPONS, params={"limit": 2, "cursor": made[0]["id"] - 1})
    assert resp.status_code == 200, resp.text
    page = resp.json()
    assert [c["id"] for c in page["items"]] == [made[0]["id"], made[1]["id"]]
    assert page["next_cursor"] == str(made[1]["id"])


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 101}, {"cursor": "x"},
                                   {"cursor": "-1"}])
async def test_a_bad_page_of_a_coupon_list_is_400(
    client: httpx.AsyncClient, admin: Actor, query: dict
) -> None:
    assert_problem(await client.get(COUPONS, params=query), 400, "VALIDATION_ERROR")
    assert_problem(await client.get(ADMIN_COUPONS, params=query, headers=admin.headers), 400,
                   "VALIDATION_ERROR")


async def test_the_admin_list_needs_an_admin(client: httpx.AsyncClient, new_user) -> None:
    assert_problem(await client.get(ADMIN_COUPONS), 401, "UNAUTHORIZED")
    assert_problem(await client.get(ADMIN_COUPONS, headers=new_user().headers), 403,
                   "FORBIDDEN")


async def test_the_admin_list_holds_every_coupon_with_issued_and_used_counts(
    client: httpx.AsyncClient, admin: Actor, ruled_coupon, new_product, funded_user
) -> None:
    made = await ruled_coupon(total_quantity=5, min_order_amount=1_000)
    ended = await ruled_coupon(start_s=-7200, end_s=-3600)
    product = await new_product(price=1_000)
    users = [await funded_user(5_000) for _ in range(2)]
    issued = [(await client.post(f"{COUPONS}/{made['id']}/issue", headers=u.headers)).json()
              for u in users]
    order = (await _order(client, users[0], product, 2, issued[0]["id"])).json()
    listed = {c["id"]: c for c in await _walk(client, ADMIN_COUPONS, made["id"] - 1, 1,
                                              admin.headers)}
    assert listed[made["id"]] == made | {"remaining": 3, "issued_count": 2, "used_count": 1}
    assert listed[ended["id"]] == ended | {"issued_count": 0, "used_count": 0}
    await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=users[0].headers)
    page = (await client.get(ADMIN_COUPONS, headers=admin.headers,
                             params={"limit": 1, "cursor": made["id"] - 1})).json()
    assert page["items"][0] | {} == made | {"remaining": 3, "issued_count": 2, "used_count": 0}
