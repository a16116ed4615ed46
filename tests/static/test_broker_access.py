"""Broker access (issue 16 finding 15, issue 17 finding 2), checked statically.

The embedded broker used in tests (Tansu 0.6) has no ACLs, and with ``--authentication`` it refuses the
unauthenticated user creation it would need (its persistent storage engines are not built in), so who may
read and write which topic is checked here: compose's init script (deploy/kafka/init-acls.sh) and the
Strimzi KafkaUsers (deploy/k8s/kafka-users.yaml) must both grant exactly the table below -- least
privilege, and only referral creates ``refnet.delivery.*`` -- every listener must authenticate, every
service must connect as its own user, and an agency's user must read its own delivery topic only.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from services.registry.broker_access import agency_acls, kafka_cli_commands, kafka_user_manifest
from shared.topics import ALL_TOPICS, delivery_topic
from tests.static._support import COMPOSE_FILE, K8S_DIR, REPO, environment_of, k8s_by_kind, load_compose, load_k8s_docs

INIT_SCRIPT = REPO / "deploy" / "kafka" / "init-acls.sh"
SERVICES = ("registry", "intake", "referral", "audit")

# user -> {(resource type, name, pattern): operations}: what each broker user may do, and nothing more.
R, W, D, C = "Read", "Write", "Describe", "Create"
EXPECTED: dict[str, dict[tuple[str, str, str], frozenset[str]]] = {
    "refnet-topics": {("topic", f"{t}{s}", "literal"): frozenset({C, D}) for t in ALL_TOPICS for s in ("", ".dlq")},
    "refnet-registry": {("topic", "refnet.registry.events", "literal"): frozenset({W, R, D})},
    "refnet-intake": {
        ("topic", "refnet.intake.events", "literal"): frozenset({W, R, D}),
        ("topic", "refnet.referral.events", "literal"): frozenset({R, D}),
        ("topic", "refnet.registry.events", "literal"): frozenset({R, D}),
        ("topic", "refnet.referral.events.dlq", "literal"): frozenset({W, D}),
        ("topic", "refnet.registry.events.dlq", "literal"): frozenset({W, D}),
        ("group", "intake-", "prefix"): frozenset({R}),
    },
    "refnet-referral": {
        ("topic", "refnet.referral.events", "literal"): frozenset({W, R, D}),
        ("topic", "refnet.delivery.", "prefix"): frozenset({C, W, R, D}),
        ("topic", "refnet.registry.events", "literal"): frozenset({R, D}),
        ("topic", "refnet.intake.events", "literal"): frozenset({R, D}),
        ("topic", "refnet.registry.events.dlq", "literal"): frozenset({W, D}),
        ("topic", "refnet.intake.events.dlq", "literal"): frozenset({W, D}),
        ("group", "referral-", "prefix"): frozenset({R}),
    },
    "refnet-audit": {
        ("topic", "refnet.audit.access", "literal"): frozenset({W, R, D}),
        **{("topic", t, "literal"): frozenset({R, D})
           for t in ("refnet.registry.events", "refnet.intake.events", "refnet.referral.events")},
        **{("topic", t + ".dlq", "literal"): frozenset({W, D}) for t in ALL_TOPICS},
        ("group", "refnet-audit", "literal"): frozenset({R}),
    },
}


def _covers(name: str, pattern: str, topic: str) -> bool:
    return topic == name if pattern == "literal" else topic.startswith(name)


def compose_acls() -> dict[str, dict[tuple[str, str, str], frozenset[str]]]:
    found: dict[str, dict[tuple[str, str, str], frozenset[str]]] = {}
    for line in INIT_SCRIPT.read_text().splitlines():
        if line.startswith("acl "):
            _, user, pattern, kind, name, *ops = shlex.split(line)
            key = (kind, name, {"prefixed": "prefix"}.get(pattern, pattern))
            assert key not in found.get(user, {}), f"{user}: {key} granted twice"
            found.setdefault(user, {})[key] = frozenset(ops)
    return found


def compose_users() -> set[str]:
    return {shlex.split(line)[1] for line in INIT_SCRIPT.read_text().splitlines() if line.startswith("user ")}


def service_users() -> dict[str, dict[str, Any]]:
    """The KafkaUsers applied with the services (not the agency template in examples/)."""
    return {d["metadata"]["name"]: d for _, d in load_k8s_docs([K8S_DIR / "kafka-users.yaml"])}


def strimzi_acls(user: dict[str, Any]) -> dict[tuple[str, str, str], frozenset[str]]:
    acls: dict[tuple[str, str, str], frozenset[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        key = (r["type"], r["name"], r.get("patternType", "literal"))
        assert key not in acls, f"{user['metadata']['name']}: {key} granted twice"
        assert "host" not in acl or acl["host"] == "*"
        acls[key] = frozenset(acl["operations"])
    return acls


# ---------------------------------------------------------------------------------------------------------
# the services' users: least privilege, the same in both shapes
# ---------------------------------------------------------------------------------------------------------
def test_compose_grants_exactly_the_table() -> None:
    assert compose_acls() == EXPECTED
    assert compose_users() == set(EXPECTED)


def test_kubernetes_grants_exactly_the_table() -> None:
    users = service_users()
    assert set(users) == set(EXPECTED)
    for name, user in users.items():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "refnet-kafka"
        assert user["spec"]["authentication"]["type"] == "scram-sha-512", name
        assert user["spec"]["authorization"]["type"] == "simple", name
        assert strimzi_acls(user) == EXPECTED[name], name


def test_only_referral_may_create_or_write_delivery_topics() -> None:
    probe = delivery_topic("agy_someone")
    for grants in (compose_acls(), {n: strimzi_acls(u) for n, u in service_users().items()}):
        for user, acls in grants.items():
            for (kind, name, pattern), ops in acls.items():
                if kind == "topic" and _covers(name, pattern, probe) and ops & {C, W, "All"}:
                    assert user == "refnet-referral", user
        # nobody holds a wildcard or a cluster-wide grant
        for acls in grants.values():
            assert all(name not in ("*", "") and kind != "cluster" for kind, name, _ in acls)


# ---------------------------------------------------------------------------------------------------------
# an agency's user: its own delivery topic, read only
# ---------------------------------------------------------------------------------------------------------
def test_agency_user_reads_only_its_own_delivery_topic() -> None:
    acls = {(a.resource_type, a.name, a.pattern): set(a.operations) for a in agency_acls("agy_a1")}
    topics = {k: v for k, v in acls.items() if k[0] == "topic"}
    assert topics == {("topic", "refnet.delivery.agy_a1", "literal"): {"Read", "Describe"}}
    # literal: not another agency's topic whose id merely begins with this one's
    for other in ("agy_a10", "agy_a1_b", "agy_b"):
        assert not any(_covers(n, p, delivery_topic(other)) for _, n, p in topics)
    assert {k for k in acls if k[0] == "group"} == {("group", "case-system-agy_a1", "literal")}


def test_agency_manifest_and_compose_commands_say_the_same() -> None:
    user = json.loads(kafka_user_manifest("agy_a1"))
    assert user["kind"] == "KafkaUser" and user["spec"]["authentication"]["type"] == "scram-sha-512"
    assert strimzi_acls(user) == {(a.resource_type, a.name, a.pattern): frozenset(a.operations)
                                  for a in agency_acls("agy_a1")}
    commands = kafka_cli_commands("agy_a1")
    assert "--add-config \"SCRAM-SHA-512=[password=$PASSWORD]\"" in commands[0]  # never a password itself
    assert any("--topic refnet.delivery.agy_a1 --resource-pattern-type literal" in c for c in commands[1:])
    example = yaml.safe_load((K8S_DIR / "examples" / "kafka-user-agency.yaml").read_text())
    assert example == json.loads(kafka_user_manifest(example["metadata"]["labels"]["refnet.org/agency"]))


def test_agency_ids_that_are_not_ids_are_refused() -> None:
    import pytest

    for bad in ("agy_a1 --operation All", "*", "agy_", "refnet.delivery.", "agy_A"):
        with pytest.raises(ValueError):
            agency_acls(bad)


# ---------------------------------------------------------------------------------------------------------
# compose: every listener authenticates, every client is a user
# ---------------------------------------------------------------------------------------------------------
def test_compose_has_no_listener_without_authentication() -> None:
    compose = load_compose()
    nodes = {n: s for n, s in compose["services"].items()
             if s["image"].startswith("apache/kafka:") and "KAFKA_NODE_ID" in environment_of(s)}
    assert len(nodes) == 3
    for name, node in nodes.items():
        env = environment_of(node)
        protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        listeners = [item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")]
        assert set(listeners) == set(protocols), name
        assert all(p in ("SASL_PLAINTEXT", "SASL_SSL") for p in protocols.values()), (name, protocols)
        assert env["KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert env["KAFKA_SUPER_USERS"] == "User:admin"
        assert "ports" not in node, name


def test_compose_clients_connect_as_their_own_users() -> None:
    compose = load_compose()
    services = compose["services"]
    expected = {svc: f"refnet-{svc}" for svc in SERVICES} | {"topics-init": "refnet-topics"}
    for name, user in expected.items():
        env = environment_of(services[name])
        assert env["REFNET_KAFKA_SECURITY_PROTOCOL"].startswith("SASL_"), name
        assert env["REFNET_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["REFNET_KAFKA_SASL_USERNAME"] == user, name
        secret = Path(env["REFNET_KAFKA_SASL_PASSWORD_FILE"]).name
        assert secret in services[name]["secrets"], name
        assert "REFNET_KAFKA_SASL_PASSWORD" not in env, name  # a file, never a value
        # the init job sets this user's password from the same secret
        assert f"user {user} /run/secrets/{secret}\n" in INIT_SCRIPT.read_text()
    assert services["topics-init"]["depends_on"]["kafka-acls-init"]["condition"] == "service_completed_successfully"


def test_compose_delivery_topics_are_created_as_prescribed() -> None:
    env = environment_of(load_compose()["services"]["referral"])
    example = yaml.safe_load_all((K8S_DIR / "examples" / "kafka-topic-delivery.yaml").read_text())
    topic = next(d for d in example if d and not d["spec"]["topicName"].endswith(".dlq"))
    assert int(env["REFNET_DELIVERY_TOPIC_PARTITIONS"]) == topic["spec"]["partitions"]
    assert int(env["REFNET_DELIVERY_TOPIC_RETENTION_MS"]) == int(topic["spec"]["config"]["retention.ms"])
    assert COMPOSE_FILE.exists()


# ---------------------------------------------------------------------------------------------------------
# Kubernetes: the Kafka listeners, and each Deployment its own user over TLS
# ---------------------------------------------------------------------------------------------------------
def test_kubernetes_kafka_listeners_all_authenticate() -> None:
    readme = (K8S_DIR / "README.md").read_text()
    block = re.search(r"```yaml\n  # in the Kafka resource's spec.kafka\n(.*?)```", readme, re.S)
    assert block, "deploy/k8s/README.md shows the Kafka listeners"
    spec = yaml.safe_load(block.group(1))
    assert spec["authorization"] == {"type": "simple"}
    assert {listener["type"] for listener in spec["listeners"]} >= {"internal"}
    assert any(listener["type"] != "internal" for listener in spec["listeners"]), "an external listener"
    for listener in spec["listeners"]:
        assert listener["tls"] is True, listener["name"]
        assert listener["authentication"]["type"] in ("scram-sha-512", "tls"), listener["name"]
    assert "allow.everyone.if.no.acl.found: false" in readme


def test_kubernetes_services_connect_as_their_own_users() -> None:
    config = k8s_by_kind("ConfigMap")["refnet-config"]["data"]
    assert config["REFNET_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["REFNET_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    users = service_users()
    for svc in SERVICES:
        dep = k8s_by_kind("Deployment")[f"refnet-{svc}"]
        pod = dep["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        user = env["REFNET_KAFKA_SASL_USERNAME"]
        assert user == f"refnet-{svc}" and user in users
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        password = Path(env["REFNET_KAFKA_SASL_PASSWORD_FILE"])
        assert volumes[mounts[str(password.parent)]]["secret"]["secretName"] == user  # the User Operator's Secret
        ca = Path(config["REFNET_KAFKA_SSL_CAFILE"])
        assert volumes[mounts[str(ca.parent)]]["secret"]["secretName"] == "refnet-kafka-cluster-ca-cert"
