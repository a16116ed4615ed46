"""docs/operations.md says what the issue asks, and what it states about the files is true of them."""

from __future__ import annotations

import re
from pathlib import Path

from ._support import DOCKERFILE, KUBERNETES_VERSION, OPERATIONS_DOC, load_compose

DOC = OPERATIONS_DOC.read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, flags=re.M | re.S)
    assert match, f"docs/operations.md has no section '## {title}'"
    return match.group(1)


def test_required_sections_exist() -> None:
    for title in (
        "How it scales",
        "Key rotation",
        "Backup and restore",
        "Monitoring",
        "Upgrading",
        "What is checked statically and what was run",
    ):
        assert _section(title).strip(), title


def test_states_plainly_that_nothing_was_run_in_docker_or_kubernetes() -> None:
    text = " ".join(_section("What is checked statically and what was run").split())
    assert "No Docker or Kubernetes run was performed in this project's CI" in " ".join(DOC.split())
    assert "no Docker or Kubernetes run was performed" in text
    assert "make test" in text
    for word in ("docker-compose.yml", "kubernetes-validate", "hadolint", "KafkaTopic"):
        assert word in text, word


def test_scaling_covers_partitions_leaders_and_the_sequencer() -> None:
    text = _section("How it scales")
    for phrase in (
        "consumer group",
        "partition",
        "advisory lock",
        "Deadline scheduler",
        "single sequencer",
        "throughput",
    ):
        assert phrase.lower() in text.lower(), phrase


def test_key_rotation_names_the_commands_and_the_overlap() -> None:
    text = _section("Key rotation")
    assert "refnet keys rotate" in text and "refnet keys rotate-intake" in text
    assert "keeps the previous key in the JWKS" in text
    assert "one token lifetime" in text
    assert "Audit checkpoint key" in text


def test_restore_keeps_the_audit_chain() -> None:
    text = " ".join(_section("Backup and restore").split())
    assert "refnet audit verify" in text
    assert "last saved checkpoint" in text
    assert (
        "Never restore the audit database to a point older than a published checkpoint without saying so"
    ) in text


def test_monitoring_names_the_signals_and_alerts() -> None:
    text = _section("Monitoring").lower()
    for signal in ("latency", "outbox backlog", "consumer lag", "dlq", "overdue"):
        assert signal in text, signal
    # The rules themselves are a manifest (tests/static/test_monitoring.py checks them); the guide points at it.
    assert "- alert:" not in text and "deploy/k8s/monitoring.yaml" in text
    manifest = (Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "monitoring.yaml").read_text()
    assert manifest.count("- alert:") >= 8


def test_upgrading_is_migrations_first_and_expand_contract() -> None:
    text = _section("Upgrading")
    assert "Migrations first" in text and "Expand, then contract" in text


def test_pinned_versions_in_the_doc_are_the_ones_in_the_files() -> None:
    line = next(p for p in DOC.split("\n\n") if p.startswith("Pinned versions:"))
    stated = set(re.findall(r"`([^`]+)`", line))
    compose_images = {svc["image"] for svc in load_compose()["services"].values() if "build" not in svc}
    dockerfile_bases = set(re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.M))
    assert compose_images | dockerfile_bases <= stated, (compose_images | dockerfile_bases) - stated
    assert ".".join(KUBERNETES_VERSION.split(".")[:2]) in line
