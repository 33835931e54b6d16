"""The workers' own /metrics: open by default, behind RUSHORDER_METRICS_TOKEN when set."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter

from rushorder.servers import free_port
from rushorder.settings import Settings
from workers.metrics import serve

TOKEN = "a-metrics-token-for-the-workers-test"


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("rushorder_test_scrapes", "a counter to find", registry=registry).inc()
    return registry


def test_a_metrics_token_guards_the_workers_metrics() -> None:
    port = free_port()
    stop = serve(port, "127.0.0.1", _registry(), Settings(metrics_token=TOKEN).may_scrape)
    assert stop is not None
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        refused = httpx.get(url)
        wrong = httpx.get(url, headers={"Authorization": "Bearer not-it"})
        scraped = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        stop()
    assert refused.status_code == 401 and wrong.status_code == 401
    assert "rushorder_test_scrapes" not in refused.text
    assert scraped.status_code == 200 and "rushorder_test_scrapes_total 1.0" in scraped.text


def test_without_a_token_the_workers_metrics_stay_open() -> None:
    port = free_port()
    stop = serve(port, "127.0.0.1", _registry())
    assert stop is not None
    try:
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop()
    assert scraped.status_code == 200 and "rushorder_test_scrapes_total 1.0" in scraped.text
