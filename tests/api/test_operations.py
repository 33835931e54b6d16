"""Operations: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import contextlib
import re

import httpx
import psycopg
import pytest

from api.app import create_app
from engine import keys
from rushorder.servers import free_port
from rushorder.settings import Settings
from tests.api.actors import Actor, assert_problem
from tests.api.support import SECRET

CONTRACT_PATHS = {
    "/api/v1/balance": {"get"}, "/api/v1/balance/charge": {"post"},
    "/api/v1/balance/history": {"get"}, "/api/v1/products": {"get"},
    "/api/v1/products/{product_id}": {"get"}, "/api/v1/products/top": {"get"},
    "/api/v1/admin/products": {"post"}, "/api/v1/admin/products/{product_id}": {"patch"},
    "/api/v1/admin/coupons": {"post"}, "/api/v1/coupons/{coupon_id}": {"get"},
    "/api/v1/coupons/{coupon_id}/issue": {"post"}, "/api/v1/users/me/coupons": {"get"},
    "/api/v1/orders": {"get", "post"}, "/api/v1/orders/{order_id}": {"get"},
    "/api/v1/orders/{order_id}/cancel": {"post"}, "/api/v1/cart": {"get"},
    "/api/v1/cart/items/{product_id}": {"put", "delete"}, "/api/v1/cart/checkout": {"post"},
    "/health/live": {"get"}, "/health/ready": {"get"}, "/metrics": {"get"},
}
IDEMPOTENT = [("/api/v1/balance/charge", "post"), ("/api/v1/orders", "post"),
              ("/api/v1/orders/{order_id}/cancel", "post"), ("/api/v1/cart/checkout", "post"),
              ("/api/v1/coupons/{coupon_id}/issue", "post")]


async def test_live(client: httpx.AsyncClient) -> None:
    resp = await client.get("/health/live")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


async def test_ready_checks_redis_scripts_and_postgres(client: httpx.AsyncClient) -> None:
    resp = await client.get("/health/ready")
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["status"] == "ready"
    assert answer["checks"] == {"redis": "ok", "postgres": "ok", "redis_memory": "ok",
                                "outbox_set_aside": "ok"}


async def test_ready_reloads_scripts_a_restarted_redis_lost(
    client: httpx.AsyncClient, api_redis_url: str
) -> None:
    import redis

    with redis.Redis.from_url(api_redis_url) as r:
        r.script_flush()
    assert (await client.get("/health/ready")).status_code == 200
    assert (await client.get("/api/v1/products/top")).status_code == 200


@pytest.mark.parametrize("down", ["redis", "postgres"])
async def test_not_ready_is_503_naming_what_is_down_and_only_admins_read_where(
    serve_app, api_settings: Settings, down: str
) -> None:
    port = free_port()
    nowhere = f"127.0.0.1:{port}"
    broken = api_settings.replace(**(
        {"redis_url": f"redis://{nowhere}/0"} if down == "redis"
        else {"database_url": f"postgresql://postgres@{nowhere}/rushorder"}))
    admin, user = Actor(1, SECRET, admin=True), Actor(2, SECRET)
    async for url in serve_app(create_app(broken)):
        async with httpx.AsyncClient(base_url=url) as http:
            for who in ({}, user.headers, {"Authorization": "Bearer forged"}):
                resp = await http.get("/health/ready", headers=who)
                doc = assert_problem(resp, 503, "SERVICE_UNAVAILABLE", names=down)
                assert doc["context"][down] == "unreachable"
                assert str(port) not in resp.text and "127.0.0.1" not in resp.text
            told = assert_problem(await http.get("/health/ready", headers=admin.headers),
                                  503, "SERVICE_UNAVAILABLE", names=down)
            assert told["context"][down].startswith("unreachable: ")
            assert str(port) in told["context"][down] and str(port) in told["detail"]
            assert (await http.get("/health/live")).status_code == 200
            if down == "redis":
                gone = await http.get("/api/v1/products")
                assert_problem(gone, 503, "SERVICE_UNAVAILABLE")
                assert str(port) not in gone.text  # no error body names a host


async def test_ready_says_when_outbox_entries_are_set_aside_and_stays_ready(
    serve_app, api_settings: Settings
) -> None:
    assert api_settings.database_url is not None
    with psycopg.connect(api_settings.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM outbox_set_aside")
        async for url in serve_app(create_app(api_settings)):
            async with httpx.AsyncClient(base_url=url) as http:
                clean = (await http.get("/health/ready")).json()
                conn.execute("INSERT INTO outbox_set_aside (stream, entry, raw, error) "
                             "VALUES (0, 1, %s, 'value too long')", (b'{"type": "x"}',))
                try:
                    told = await http.get("/health/ready")
                finally:
                    conn.execute("DELETE FROM outbox_set_aside")
    assert clean["status"] == "ready" and clean["checks"]["outbox_set_aside"] == "ok"
    assert told.status_code == 200, told.text  # one bad record takes no process out
    assert told.json()["status"] == "ready, with outbox entries set aside"
    assert told.json()["checks"]["outbox_set_aside"].startswith("1 outbox entries set aside")


async def test_ready_without_a_database_url_checks_redis_only(
    serve_app, api_settings: Settings
) -> None:
    async for url in serve_app(create_app(api_settings.replace(database_url=None))):
        async with httpx.AsyncClient(base_url=url) as http:
            resp = await http.get("/health/ready")
    assert resp.json()["checks"] == {"redis": "ok", "postgres": "not configured",
                                     "redis_memory": "ok", "outbox_set_aside": "not configured"}


SAMPLE = re.compile(r"^(?P<name>\w+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match["name"] == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(match["value"])
    return 0.0


async def test_metrics_count_requests_by_route_template_and_orders_by_outcome(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    before = (await client.get("/metrics")).text
    user, product = await funded_user(1_000), await new_product(price=600, stock=1)
    url = f"/api/v1/products/{product['id']}"
    await client.get(url)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    assert (await client.post("/api/v1/orders", json=body, headers=user.headers)).status_code == 201
    assert (await client.post("/api/v1/orders", json=body, headers=user.headers)).status_code == 409
    resp = await client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    after = resp.text

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    route = {"method": "GET", "route": "/api/v1/products/{product_id}", "status": "200"}
    assert grew("rushorder_http_requests_total", **route) >= 1
    assert grew("rushorder_http_request_duration_seconds_count", **route) >= 1
    assert grew("rushorder_http_request_duration_seconds_bucket", le="+Inf", **route) >= 1
    assert grew("rushorder_http_requests_total", method="POST", route="/api/v1/orders",
                status="409") >= 1
    assert grew("rushorder_orders_placed_total") >= 1
    assert grew("rushorder_orders_rejected_total", code="OUT_OF_STOCK") >= 1


async def test_openapi_at_schema_documents_every_contract_route(
    client: httpx.AsyncClient
) -> None:
    resp = await client.get("/schema")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.")
    for path, methods in CONTRACT_PATHS.items():
        assert methods <= doc["paths"][path].keys(), path
    assert doc == (await client.get("/schema/openapi.json")).json()


async def test_openapi_documents_bodies_keys_and_problems(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/schema")).json()
    order = doc["paths"]["/api/v1/orders"]["post"]
    body = order["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["items"] and body["additionalProperties"] is False
    line = body["properties"]["items"]["items"]
    assert line["properties"]["quantity"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert {"201", "400", "401", "404", "409", "422"} <= order["responses"].keys()
    assert "application/problem+json" in order["responses"]["409"]["content"]
    for path, method in IDEMPOTENT:
        names = [p["name"] for p in doc["paths"][path][method].get("parameters", [])]
        assert "Idempotency-Key" in names, path
    assert doc["paths"]["/api/v1/orders"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/api/v1/products"]["get"]


async def test_interactive_docs_page(client: httpx.AsyncClient) -> None:
    resp = await client.get("/schema/swagger")
    assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
    assert "swagger" in resp.text.lower()


def test_the_worker_factory_freezes_the_app_and_spaces_the_collector(monkeypatch) -> None:
    """api.asgi:app, what each server worker calls, leaves the built app out of the
    cyclic collector's passes and runs young passes every GC_THRESHOLDS[0] allocations."""
    import gc

    from api import asgi

    before = gc.get_threshold()
    monkeypatch.setenv("RUSHORDER_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("RUSHORDER_REDIS_URL", "redis://127.0.0.1:9/0")  # built, not started
    try:
        gc.unfreeze()
        asgi.app()
        assert gc.get_threshold() == asgi.GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_redis_memory_over_the_high_water_mark_is_not_ready_and_says_why(
    serve_app, api_settings: Settings
) -> None:
    async for url in serve_app(create_app(api_settings.replace(redis_memory_high_water_mb=1))):
        async with httpx.AsyncClient(base_url=url) as http:
            doc = assert_problem(await http.get("/health/ready"), 503, "SERVICE_UNAVAILABLE",
                                 names="redis_memory over the high-water mark")
            assert doc["context"] == {"redis": "ok", "postgres": "ok",
                                      "redis_memory": "over the high-water mark"}
            admin = Actor(1, SECRET, admin=True)
            doc = assert_problem(await http.get("/health/ready", headers=admin.headers), 503,
                                 "SERVICE_UNAVAILABLE", names="high-water mark of 1 MB")
            assert "RUSHORDER_REDIS_MEMORY_HIGH_WATER_MB" in doc["context"]["redis_memory"]
            scraped = (await http.get("/metrics")).text
    assert "rushorder_redis_memory_high_water_bytes 1048576" in scraped


async def test_metrics_show_redis_memory_and_each_groups_backlog_and_oldest_age(
    client: httpx.AsyncClient, api_redis_url: str, funded_user
) -> None:
    import redis

    with redis.Redis.from_url(api_redis_url) as r:
        streams = keys.layout(keys.DEFAULT_GROUPS).outboxes  # each user group's, the catalog's
        for stream in streams:
            for group in ("postgres", "platform"):
                with contextlib.suppress(redis.ResponseError):  # already there
                    r.xgroup_create(stream, group, id="0", mkstream=True)
        await funded_user(1_000)  # an event nobody acknowledges here
        backlog = {group: sum(int(i["pending"]) + int(i["lag"] or 0)
                              for stream in streams for i in r.xinfo_groups(stream)
                              if i["name"].decode() == group)
                   for group in ("postgres", "platform")}
        scraped = (await client.get("/metrics")).text
    used = re.search(r"^rushorder_redis_used_memory_bytes (\d+)$", scraped, re.M)
    assert used and int(used.group(1)) > 100_000
    for group in ("postgres", "platform"):
        shown = re.search(rf'^rushorder_outbox_backlog{{group="{group}"}} (\d+)$', scraped, re.M)
        assert shown and int(shown.group(1)) >= backlog[group] > 0
        age = re.search(rf'^rushorder_outbox_oldest_unacked_age_seconds{{group="{group}"}} '
                        r"([\d.]+)$", scraped, re.M)
        assert age and float(age.group(1)) > 0
    assert re.search(r"^rushorder_outbox_length \d+$", scraped, re.M)


async def test_metrics_need_the_metrics_token_when_one_is_set(
    serve_app, api_settings: Settings
) -> None:
    token = "scrape-token-of-the-tests"
    async for url in serve_app(create_app(api_settings.replace(metrics_token=token))):
        async with httpx.AsyncClient(base_url=url) as http:
            for who in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"Bearer {token}x"},
                        Actor(1, SECRET, admin=True).headers):
                resp = await http.get("/metrics", headers=who)
                assert_problem(resp, 401, "UNAUTHORIZED", names="metrics token")
                assert "rushorder_" not in resp.text
            resp = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and "rushorder_redis_used_memory_bytes" in resp.text


async def test_metrics_are_open_without_a_metrics_token(client: httpx.AsyncClient) -> None:
    resp = await client.get("/metrics")
    assert resp.status_code == 200 and "rushorder_redis_used_memory_bytes" in resp.text
