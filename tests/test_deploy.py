"""The deploy files: the Grafana dashboard queries only metrics rushorder exports (the set
taken from the code that exports them), Prometheus scrapes every API and worker service of
the compose file and nothing else, Grafana's provisioning is where the compose file mounts
it, and docker-compose accepts the file. The compose file is closed by default (issue 25):
published ports on loopback only, the mock platform and Prometheus unpublished, Redis and
Grafana behind passwords, and every secret required from the environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.console import Seller, top_lines
from api.metrics import Metrics, redis_lines
from engine.ops.gauges import ConsumerLag, Gauges
from workers.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rushorder.json"
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created"), "summary": ("_count", "_sum")}
FUNCTIONS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "delta",
             "histogram_quantile", "time", "topk", "bottomk", "clamp_min", "clamp_max", "abs",
             "sort", "sort_desc", "vector", "scalar", "max_over_time", "min_over_time"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"


def sample_names(name: str, kind: str) -> set[str]:
    """The sample names a metric family of this kind exposes."""
    return {name + suffix for suffix in SUFFIXES.get(kind, ("",))}


def exported() -> set[str]:
    """Every sample name rushorder exports: the API processes' own metrics, the Redis-wide
    and top-5 lines of the API's /metrics, and the workers' metrics."""
    names: set[str] = set()
    for registry in (Metrics().registry, WorkerMetrics("postgres").registry):
        for family in registry.collect():
            names |= sample_names(family.name, family.type)
    gauges = Gauges(used_memory=1, maxmemory=0, outbox_length=1, dead_letters=1,
                    consumers={"postgres": ConsumerLag(backlog=1, oldest_age_s=1.0)})
    seller = Seller(rank=1, product_id=1, name='a "b"', price=1, sold_quantity=1, stock=1)
    text = (redis_lines(gauges, 1) + top_lines([seller])).decode()
    for family in text_string_to_metric_families(text):
        names |= sample_names(family.name, family.type)
    return names


def queried(expr: str) -> tuple[set[str], set[str]]:
    """The metric names a PromQL expression selects, and the functions it calls."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(GROUPING, " ", bare)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    functions = {w for w in words if re.search(rf"\b{w}\s*\(", bare)}
    return words - functions, functions


def expressions() -> list[tuple[str, str]]:
    """Every (panel title, PromQL) of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel["targets"]]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_the_query_reader_finds_metrics_and_functions() -> None:
    names, functions = queried(
        'time() - max by (group) (rushorder_a_seconds) + histogram_quantile(0.99, sum by (le) '
        '(rate(rushorder_b_bucket{route="/x", code=~"5.."}[1m])))')
    assert names == {"rushorder_a_seconds", "rushorder_b_bucket"}
    assert functions == {"time", "max", "histogram_quantile", "sum", "rate"}


def test_the_exported_set_comes_from_the_code() -> None:
    names = exported()
    assert {"rushorder_orders_placed_total", "rushorder_http_request_duration_seconds_bucket",
            "rushorder_outbox_backlog", "rushorder_top_stock",
            "rushorder_worker_events_forwarded_total"} <= names
    assert "rushorder_orders_placed" not in names  # a counter's samples end in _total


def test_every_metric_the_dashboard_queries_is_one_rushorder_exports() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "rushorder" and board["panels"]
    known = exported()
    unknown, strange, used = [], [], set()
    for title, expr in expressions():
        names, functions = queried(expr)
        assert names, f"{title}: {expr} selects no metric"
        used |= names
        unknown += [f"{title}: {name}" for name in sorted(names - known)]
        strange += [f"{title}: {f}()" for f in sorted(functions - FUNCTIONS)]
    assert unknown == [] and strange == []
    # The console's parts all have their panel.
    assert {"rushorder_orders_placed_total", "rushorder_orders_rejected_total",
            "rushorder_http_request_duration_seconds_bucket", "rushorder_outbox_backlog",
            "rushorder_outbox_oldest_unacked_age_seconds", "rushorder_outbox_dead_letters",
            "rushorder_worker_heartbeat_timestamp_seconds", "rushorder_redis_used_memory_bytes",
            "rushorder_redis_memory_high_water_bytes", "rushorder_top_stock"} <= used


def test_every_panel_uses_the_provisioned_prometheus() -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])


def container_ports(service: dict[str, Any]) -> set[int]:
    """The ports a compose service listens on inside its network."""
    published = {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}
    return published | {int(p) for p in service.get("expose", [])}


def test_prometheus_scrapes_every_api_and_worker_service_and_only_them() -> None:
    services = compose()["services"]
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    scraped: dict[str, set[str]] = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in services, f"{job['job_name']}: no service {host}"
                assert int(port) in container_ports(services[host]), target
                scraped.setdefault(services[host]["command"][0], set()).add(host)
    by_command: dict[str, set[str]] = {}
    for name, service in services.items():
        if service.get("command"):
            by_command.setdefault(service["command"][0], set()).add(name)
    assert scraped == {"api": by_command["api"], "worker": by_command["worker"]}
    worker = services["worker"]
    assert int(worker["environment"]["RUSHORDER_WORKER_METRICS_PORT"]) in container_ports(worker)


def test_the_compose_file_mounts_what_prometheus_and_grafana_are_given() -> None:
    services = compose()["services"]
    mounts = {service: dict(v.split(":")[:2] for v in services[service]["volumes"]
                            if v.startswith("./")) for service in ("prometheus", "grafana")}
    for service, pairs in mounts.items():
        for source in pairs:
            assert (ROOT / source).exists(), f"{service} mounts {source}"
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/rushorder.yml").read_text())["providers"][0]
    assert mounts["grafana"]["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["grafana"]["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


# What docker-compose.yml takes from the environment, with no default (issue 25).
REQUIRED = ("RUSHORDER_JWT_SECRET", "REDIS_PASSWORD", "POSTGRES_PASSWORD",
            "GRAFANA_ADMIN_PASSWORD")
APP_SERVICES = ("migrate", "prepare", "platform", "worker", "api-1", "api-2")


def required(name: str) -> str:
    """A compose interpolation of ``name`` that refuses to start without it."""
    return rf"\$\{{{name}:\?[^}}]+\}}"


def test_every_published_port_is_bound_to_loopback_only() -> None:
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"api-1", "api-2", "grafana"}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_the_mock_platform_and_prometheus_answer_inside_the_network_only() -> None:
    services = compose()["services"]
    for name, port in (("platform", 8100), ("prometheus", 9090)):
        assert "ports" not in services[name], f"{name} is published"
        assert container_ports(services[name]) == {port}
    assert services["worker"]["environment"]["RUSHORDER_DATA_PLATFORM_URL"] == \
        "http://platform:8100"


def test_redis_asks_for_a_password_that_every_service_url_carries() -> None:
    services = compose()["services"]
    command = services["redis"]["command"]
    password = command[command.index("--requirepass") + 1]
    assert re.fullmatch(required("REDIS_PASSWORD"), password)
    assert re.fullmatch(required("REDIS_PASSWORD"), services["redis"]["environment"][
        "REDISCLI_AUTH"])  # the healthcheck's redis-cli logs in too
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert re.fullmatch(rf"redis://:{required('REDIS_PASSWORD')}@redis:6379/0",
                            env["RUSHORDER_REDIS_URL"]), name
        assert re.fullmatch(rf"postgresql://rushorder:{required('POSTGRES_PASSWORD')}"
                            r"@postgres:5432/rushorder", env["RUSHORDER_DATABASE_URL"]), name
    assert re.fullmatch(required("POSTGRES_PASSWORD"),
                        services["postgres"]["environment"]["POSTGRES_PASSWORD"])


def test_the_jwt_secret_comes_from_the_environment_with_no_default() -> None:
    services = compose()["services"]
    for name in APP_SERVICES:
        secret = services[name]["environment"]["RUSHORDER_JWT_SECRET"]
        assert re.fullmatch(required("RUSHORDER_JWT_SECRET"), secret), name
    assert "rushorder-dev-secret" not in (ROOT / "docker-compose.yml").read_text()


def test_grafana_takes_its_admin_password_from_the_environment_and_no_anonymous_viewer(
) -> None:
    env = compose()["services"]["grafana"]["environment"]
    assert re.fullmatch(required("GRAFANA_ADMIN_PASSWORD"), env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env


def docker_compose_config(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` of the file, with only these variables set."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **environment}
    return subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose is not installed (apt-get install docker-compose)")
def test_docker_compose_accepts_the_file_and_refuses_to_start_without_a_secret() -> None:
    given = {name: f"{name.lower().replace('_', '-')}-0123456789abcdef0123456789"
             for name in REQUIRED}
    done = docker_compose_config(given)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    assert f"redis://:{given['REDIS_PASSWORD']}@redis:6379/0" == \
        resolved["api-1"]["environment"]["RUSHORDER_REDIS_URL"]
    for port in resolved["api-1"]["ports"] + resolved["grafana"]["ports"]:
        # docker-compose 1 keeps the short form, Compose 2 writes the long one
        host = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host == "127.0.0.1", port
    for missing in REQUIRED:
        refused = docker_compose_config({k: v for k, v in given.items() if k != missing})
        assert refused.returncode != 0 and f"set {missing}" in refused.stderr, missing
