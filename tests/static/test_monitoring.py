"""deploy/k8s/monitoring.yaml and the operational arithmetic of the manifests, checked offline.

Every alert links a runbook section that exists in docs/operations.md; every refnet_* metric a rule reads is
one the code exports (a rule on a name nothing exports never fires); the series whose absence means "nothing
is doing this" (no replica scraped, no relay leader, no deadline scheduler) have absent() rules. The
database pools at the autoscalers' maxima fit PostgreSQL's connection limit; pods leave the load balancer
before they stop serving."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ._support import K8S_DIR, k8s_by_kind

ROOT = K8S_DIR.parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
MONITORING = K8S_DIR / "monitoring.yaml"
SERVICES = ("registry", "intake", "referral", "audit")
# Of PostgreSQL's max_connections (the CloudNativePG Cluster's, one server for every service's database): the
# superuser reserve (3) and room for migrations, backups, the bootstrap job and an operator's psql (20).
RESERVED = 3 + 20
# Sessions a replica holds besides its pool: the relay's, the leaders' advisory-lock sessions, LISTEN.
SESSIONS_BESIDE_THE_POOL = 4
POOL_DEFAULTS = {"DATABASE_POOL_SIZE": 20, "DATABASE_POOL_OVERFLOW": 10}  # shared/settings.py


def _docs(kind: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MONITORING.read_text(encoding="utf-8")) if d and d["kind"] == kind]


def _rules() -> list[dict[str, Any]]:
    return [rule for doc in _docs("PrometheusRule") for group in doc["spec"]["groups"] for rule in group["rules"]]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower-case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            anchors.add(re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-"))
    return anchors


def _exported_metrics() -> set[str]:
    """Metric names the code declares (Counter/Gauge/Histogram), with the series names they give."""
    names: set[str] = set()
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        for kind, name in re.findall(r"\b(Counter|Gauge|Histogram)\(\s*\"(refnet_[a-z0-9_]+)\"",
                                     path.read_text(encoding="utf-8")):
            names.add(name)
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_there_is_a_pod_monitor_and_a_rule_set() -> None:
    assert len(_docs("PodMonitor")) == 1 and len(_docs("PrometheusRule")) == 1
    assert len(_rules()) >= 10


def test_the_pod_monitor_scrapes_every_service_on_its_http_port() -> None:
    (monitor,) = _docs("PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoint_ports = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    for service in SERVICES:
        template = k8s_by_kind("Deployment")[f"refnet-{service}"]["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items(), service
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint_ports <= ports, service


def test_every_runbook_url_points_at_a_section_of_the_operations_guide() -> None:
    anchors = _anchors(OPERATIONS.read_text(encoding="utf-8"))
    for rule in _rules():
        url = rule["annotations"]["runbook_url"]
        assert url.split("#", 1)[0].endswith("docs/operations.md"), rule["alert"]
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: no section #{url.split('#', 1)[1]}"


def test_every_refnet_metric_a_rule_reads_is_exported_by_the_code() -> None:
    exported = _exported_metrics()
    used = {name for rule in _rules() for name in re.findall(r"\brefnet_[a-z0-9_]+", rule["expr"])}
    assert used, "the rules read no refnet_* metric"
    assert used <= exported, f"read by a rule, exported by no code: {sorted(used - exported)}"


def test_what_has_no_series_when_nothing_runs_is_caught_by_absent() -> None:
    absent = {rule["expr"].replace(" ", "") for rule in _rules() if rule["expr"].startswith("absent(")}
    wanted = {f'absent(refnet_broker_up{{service="{s}"}})' for s in SERVICES}
    wanted |= {f'absent(refnet_outbox_backlog{{service="{s}"}})' for s in SERVICES}
    wanted |= {f'absent(refnet_leader{{service="{s}",task="outbox-relay"}})' for s in SERVICES}
    wanted |= {'absent(refnet_leader{service="referral",task="deadline-scheduler"})',
               "absent(refnet_referrals_overdue)"}
    assert wanted <= absent, sorted(wanted - absent)
    # and the broker's health is alerted on, since readiness no longer carries it
    assert any("refnet_broker_up" in r["expr"] and "absent" not in r["expr"] for r in _rules())


def test_the_guide_keeps_no_alert_rules_of_its_own() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    assert "- alert:" not in text, "alert rules belong in deploy/k8s/monitoring.yaml, not in the guide"
    assert "deploy/k8s/monitoring.yaml" in text


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_database_connections_at_the_autoscalers_maxima_fit_postgres() -> None:
    deployments, hpas = k8s_by_kind("Deployment"), k8s_by_kind("HorizontalPodAutoscaler")
    (cluster,) = k8s_by_kind("Cluster").values()
    max_connections = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
    total = 0
    for service in SERVICES:
        deployment = deployments[f"refnet-{service}"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = _env(container)
        pool = sum(int(env.get(f"REFNET_{service.upper()}_{key}", default)) for key, default in POOL_DEFAULTS.items())
        surge = int(deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"])  # a rollout at the maximum
        replicas = hpas[f"refnet-{service}"]["spec"]["maxReplicas"] + surge
        total += replicas * (pool + SESSIONS_BESIDE_THE_POOL)
    assert total <= max_connections - RESERVED, f"{total} connections at the maxima > {max_connections - RESERVED}"


def test_pods_leave_the_load_balancer_before_they_stop() -> None:
    cli = (ROOT / "deploy" / "launcher" / "cli.py").read_text(encoding="utf-8")
    match = re.search(r"timeout_graceful_shutdown=(\d+)", cli)
    assert match, "uvicorn runs without a graceful-shutdown timeout"
    graceful = int(match.group(1))
    for service in SERVICES:
        spec = k8s_by_kind("Deployment")[f"refnet-{service}"]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep", service
        pre_stop = int(command[1])
        assert pre_stop >= 5, service
        assert spec["terminationGracePeriodSeconds"] >= pre_stop + graceful + 10, service


def test_readiness_is_not_described_as_needing_the_broker() -> None:
    for path in [*K8S_DIR.glob("*.yaml"), ROOT / "deploy" / "Dockerfile", ROOT / "docs" / "operations.md"]:
        assert not re.search(r"[Rr]eady.{0,40}database and broker reachable", path.read_text(encoding="utf-8")), path


