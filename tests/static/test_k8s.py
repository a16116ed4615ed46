"""deploy/k8s, checked offline: no cluster is involved (none is available to this project's CI).

Built-in kinds are validated by kubernetes-validate (strict: unknown fields are errors) against the
schemas it ships for KUBERNETES_VERSION. Strimzi's KafkaTopic is a CRD it has no schema for; those are
validated against KAFKA_TOPIC_SCHEMA, a small schema of our own in _support.py.
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from ._cnpg import CNPG_SCHEMAS
from ._monitoring import MONITORING_SCHEMAS
from ._support import (
    CONTRACT_TOPICS,
    K8S_DIR,
    KAFKA_TOPIC_SCHEMA,
    KAFKA_USER_SCHEMA,
    KUBERNETES_VERSION,
    SERVICE_PORTS,
    egress_allowed,
    ingress_allowed,
    k8s_by_kind,
    k8s_manifest_files,
    kustomization_files,
    load_k8s_docs,
    selector_matches,
    workload_problems,
)

DOCS = load_k8s_docs()
NS = "refnet"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must not fetch anything: any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during offline validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.relative_to(K8S_DIR)}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def validate(doc: dict[str, Any]) -> None:
    if doc.get("kind") == "KafkaTopic":
        jsonschema.Draft202012Validator(KAFKA_TOPIC_SCHEMA).validate(doc)
    elif doc.get("kind") in MONITORING_SCHEMAS:
        jsonschema.Draft202012Validator(MONITORING_SCHEMAS[doc["kind"]]).validate(doc)
    elif doc.get("kind") in CNPG_SCHEMAS:
        jsonschema.Draft202012Validator(CNPG_SCHEMAS[doc["kind"]]).validate(doc)
    elif doc.get("kind") == "KafkaUser":
        jsonschema.Draft202012Validator(KAFKA_USER_SCHEMA).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# ---------------------------------------------------------------------------------------------------------
# schema validation
# ---------------------------------------------------------------------------------------------------------
def test_pinned_kubernetes_version_is_shipped() -> None:
    major_minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert major_minor in {".".join(v.split(".")[:2]) for v in all_versions()}


def test_there_are_manifests() -> None:
    kinds = {d["kind"] for _, d in DOCS}
    assert {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "Job",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "KafkaTopic",
        "Ingress",
    } <= kinds


@pytest.mark.parametrize("item", DOCS, ids=_id)
def test_manifest_validates_offline(item: tuple[Path, dict[str, Any]]) -> None:
    _, doc = item
    try:
        validate(doc)
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(e.message)


def _deployment() -> dict[str, Any]:
    return copy.deepcopy(k8s_by_kind("Deployment")["refnet-intake"])


def test_validator_rejects_a_wrong_type() -> None:
    doc = _deployment()
    doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8002"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(doc)


def test_validator_rejects_an_unknown_field() -> None:
    doc = _deployment()
    doc["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(doc)


def test_validator_rejects_an_unknown_kind() -> None:
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({"apiVersion": "v1", "kind": "Deplyment", "metadata": {"name": "x"}})


def _topic() -> dict[str, Any]:
    return copy.deepcopy(next(d for _, d in DOCS if d["kind"] == "KafkaTopic"))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda t: t["spec"].__setitem__("replicas", "3"),
        lambda t: t["spec"].__setitem__("replica", 3),
        lambda t: t["metadata"]["labels"].pop("strimzi.io/cluster"),
        lambda t: t["spec"].__setitem__("topicName", "refnet/bad topic"),
        lambda t: t["metadata"].__setitem__("name", "Refnet_Intake"),
        lambda t: t.__setitem__("apiVersion", "kafka.strimzi.io/v1beta1"),
        lambda t: t["spec"].pop("partitions"),
    ],
)
def test_kafka_topic_schema_rejects_breakage(breakage) -> None:
    topic = _topic()
    breakage(topic)
    with pytest.raises(jsonschema.ValidationError):
        validate(topic)


# ---------------------------------------------------------------------------------------------------------
# workloads
# ---------------------------------------------------------------------------------------------------------
def test_deployments_have_probes_resources_and_run_as_non_root() -> None:
    deployments = k8s_by_kind("Deployment")
    assert set(deployments) == {f"refnet-{s}" for s in SERVICE_PORTS}
    for doc in deployments.values():
        assert workload_problems(doc, probes=True) == []


def test_jobs_have_resources_and_run_as_non_root() -> None:
    for doc in k8s_by_kind("Job").values():
        assert workload_problems(doc, probes=False) == []
        assert doc["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("breakage", "word"),
    [
        (lambda d: _container(d).pop("livenessProbe"), "livenessProbe"),
        (lambda d: _container(d).pop("readinessProbe"), "readinessProbe"),
        (lambda d: _container(d)["readinessProbe"]["httpGet"].__setitem__("path", "/healthz"), "/readyz"),
        (lambda d: _container(d)["resources"].pop("limits"), "limit"),
        (lambda d: _container(d)["resources"]["requests"].pop("memory"), "memory request"),
        (
            lambda d: (
                d["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
                _container(d)["securityContext"].pop("runAsNonRoot"),
            ),
            "runAsNonRoot",
        ),
        (lambda d: _container(d)["securityContext"].__setitem__("runAsNonRoot", False), "runAsNonRoot"),
        (lambda d: _container(d)["securityContext"].__setitem__("readOnlyRootFilesystem", False), "writable"),
        (lambda d: _container(d)["securityContext"].pop("allowPrivilegeEscalation"), "escalation"),
    ],
)
def test_workload_checker_catches_breakage(breakage, word: str) -> None:
    doc = _deployment()
    breakage(doc)
    problems = workload_problems(doc, probes=True)
    assert any(word in p for p in problems), problems


@pytest.mark.parametrize("service", sorted(SERVICE_PORTS))
def test_each_service_has_its_full_set(service: str) -> None:
    name = f"refnet-{service}"
    port = SERVICE_PORTS[service]
    dep = k8s_by_kind("Deployment")[name]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(dep["spec"]["selector"], pod_labels)
    c = _container(dep)
    assert c["args"] == ["serve", service]
    assert c["ports"][0] == {"name": "http", "containerPort": port, "protocol": "TCP"}
    env = {e["name"]: e for e in c["env"]}
    assert env["PORT"]["value"] == str(port)
    assert env[f"REFNET_{service.upper()}_PORT"]["value"] == str(port)
    assert "secretKeyRef" in env[f"REFNET_{service.upper()}_DATABASE_URL"]["valueFrom"]

    svc = k8s_by_kind("Service")[name]
    assert selector_matches({"matchLabels": svc["spec"]["selector"]}, pod_labels)
    assert svc["spec"]["ports"][0]["port"] == port and svc["spec"]["ports"][0]["targetPort"] == "http"

    hpa = k8s_by_kind("HorizontalPodAutoscaler")[name]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"

    pdb = k8s_by_kind("PodDisruptionBudget")[name]
    assert pdb["apiVersion"] == "policy/v1"
    assert selector_matches(pdb["spec"]["selector"], pod_labels)

    job = k8s_by_kind("Job")[f"{name}-migrate"]
    assert _container(job)["args"] == ["migrate", service]
    assert _container(job)["image"] == c["image"]


def test_audit_runs_as_writer_and_migrates_as_owner() -> None:
    dep_env = {e["name"]: e for e in _container(k8s_by_kind("Deployment")["refnet-audit"])["env"]}
    job_env = {e["name"]: e for e in _container(k8s_by_kind("Job")["refnet-audit-migrate"])["env"]}
    assert dep_env["REFNET_AUDIT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "refnet-audit-db"
    owner = job_env["REFNET_AUDIT_MIGRATION_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert owner == "refnet-audit-db-owner"
    assert not any(
        (e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name") == owner for e in dep_env.values()
    )


def test_one_pinned_image_everywhere() -> None:
    images = set()
    for _, doc in DOCS:
        if doc["kind"] in {"Deployment", "Job"}:
            images |= {c["image"] for c in doc["spec"]["template"]["spec"]["containers"]}
    assert len(images) == 1, images
    image = images.pop()
    name, _, tag = image.rpartition(":")
    assert tag and tag != "latest" and re.match(r"^\d+\.\d+\.\d+", tag), image
    for path in kustomization_files():
        kust = yaml.safe_load(path.read_text())
        assert {"name": name, "newTag": tag} in kust["images"], path


def test_key_files_come_from_secret_volumes() -> None:
    expected = {
        "registry": ("REFNET_REGISTRY_SIGNING_KEY_FILE", "refnet-registry-signing-key"),
        "intake": ("REFNET_INTAKE_MASTER_KEY_FILE", "refnet-intake-master-key"),
        "referral": ("REFNET_REFERRAL_MASTER_KEY_FILE", "refnet-referral-master-key"),
        "audit": ("REFNET_AUDIT_CHECKPOINT_KEY_FILE", "refnet-audit-checkpoint-key"),
    }
    for service, (var, secret) in expected.items():
        dep = k8s_by_kind("Deployment")[f"refnet-{service}"]
        c = _container(dep)
        path = next(e["value"] for e in c["env"] if e["name"] == var)
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        assert mount.get("readOnly") is True
        vol = volumes[mount["name"]]["secret"]
        assert vol["secretName"] == secret
        assert path.endswith("/" + vol["items"][0]["path"])
        assert vol["defaultMode"] & 0o007 == 0, "secret files readable by others"


def test_the_registry_kek_comes_from_a_secret_volume_in_the_registry_and_its_migration() -> None:
    for kind, name in (("Deployment", "refnet-registry"), ("Job", "refnet-registry-migrate")):
        doc = k8s_by_kind(kind)[name]
        c = _container(doc)
        path = next(e["value"] for e in c["env"] if e["name"] == "REFNET_REGISTRY_KEK_FILE")
        volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"]["volumes"]}
        mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        assert mount.get("readOnly") is True
        vol = volumes[mount["name"]]["secret"]
        assert vol["secretName"] == "refnet-registry-kek", name
        assert path.endswith("/" + vol["items"][0]["path"])
        assert vol["defaultMode"] & 0o007 == 0, "secret files readable by others"


# ---------------------------------------------------------------------------------------------------------
# secrets are referenced, never committed
# ---------------------------------------------------------------------------------------------------------
def _secret_names() -> set[str]:
    names = set()
    for _, doc in DOCS:
        if doc["kind"] in {"Deployment", "Job"}:
            spec = doc["spec"]["template"]["spec"]
            for c in spec["containers"]:
                for e in c.get("env") or []:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        names.add(ref["name"])
                for ef in c.get("envFrom") or []:
                    if "secretRef" in ef:
                        names.add(ef["secretRef"]["name"])
            for v in spec.get("volumes") or []:
                if "secret" in v:
                    names.add(v["secret"]["secretName"])
        if doc["kind"] == "Ingress":
            names |= {t["secretName"] for t in doc["spec"].get("tls") or []}
    return names


def test_no_secret_objects_and_every_reference_documented() -> None:
    assert not [d for _, d in DOCS if d["kind"] == "Secret"], "Secret values must not be committed"
    readme = (K8S_DIR / "README.md").read_text()
    names = _secret_names()
    assert len(names) >= 8
    for name in names:
        assert f"`{name}`" in readme, f"deploy/k8s/README.md does not say how to create {name}"
    for path in k8s_manifest_files():
        text = path.read_text()
        assert "BEGIN PRIVATE KEY" not in text and not re.search(r"://[^/\s:@]+:[^@\s/]+@", text), path


def test_config_map_references_resolve() -> None:
    maps = k8s_by_kind("ConfigMap")
    for _, doc in DOCS:
        if doc["kind"] in {"Deployment", "Job"}:
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for ef in c.get("envFrom") or []:
                    if "configMapRef" in ef:
                        assert ef["configMapRef"]["name"] in maps
    data = maps["refnet-config"]["data"]
    assert data["REFNET_KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    assert data["REFNET_AUDIENCE"] == "refnet"
    assert not [k for k in data if re.search(r"PASSWORD|SECRET|DATABASE_URL|_KEY$", k)]


# ---------------------------------------------------------------------------------------------------------
# network policies (a small evaluator of NetworkPolicy semantics)
# ---------------------------------------------------------------------------------------------------------
POLICIES = [d for _, d in DOCS if d["kind"] == "NetworkPolicy"]


def _pod(service: str, component: str = "service") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": f"refnet-{service}",
        "app.kubernetes.io/part-of": "refnet",
        "app.kubernetes.io/component": component,
    }


POSTGRES = {"app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": "refnet-postgres"}
KAFKA = {"strimzi.io/cluster": "refnet-kafka", "strimzi.io/kind": "Kafka", "strimzi.io/broker-role": "true"}
INGRESS_CONTROLLER = ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
STRANGER_HERE = (NS, {"app": "debug-shell"})
STRANGER_ELSEWHERE = ("default", {"app": "anything"})


def test_pod_labels_used_by_the_evaluator_are_the_real_ones() -> None:
    for service in SERVICE_PORTS:
        dep = k8s_by_kind("Deployment")[f"refnet-{service}"]
        assert dep["spec"]["template"]["metadata"]["labels"] == _pod(service)
        job = k8s_by_kind("Job")[f"refnet-{service}-migrate"]
        assert job["spec"]["template"]["metadata"]["labels"] == _pod(service, "migration")


def test_ingress_is_denied_by_default() -> None:
    default = [
        p
        for p in POLICIES
        if p["spec"]["podSelector"] == {}
        and p["spec"]["policyTypes"] == ["Ingress"]
        and not p["spec"].get("ingress")
    ]
    assert default
    assert not ingress_allowed(POLICIES, NS, {"app": "anything"}, *STRANGER_HERE, 80)


def _allowed(
    policies: list[dict[str, Any]], target: dict[str, str], source: tuple[str, dict[str, str]], port: int
) -> bool:
    return ingress_allowed(policies, NS, target, source[0], source[1], port)


def test_only_the_services_reach_the_database() -> None:
    for service in SERVICE_PORTS:
        assert _allowed(POLICIES, POSTGRES, (NS, _pod(service)), 5432), service
        assert _allowed(POLICIES, POSTGRES, (NS, _pod(service, "migration")), 5432), service
    for stranger in (STRANGER_HERE, STRANGER_ELSEWHERE, INGRESS_CONTROLLER, PROMETHEUS, (NS, KAFKA)):
        assert not _allowed(POLICIES, POSTGRES, stranger, 5432), stranger


def test_only_the_services_reach_kafka() -> None:
    for service in SERVICE_PORTS:
        assert _allowed(POLICIES, KAFKA, (NS, _pod(service)), 9092), service
    for stranger in (
        STRANGER_HERE,
        STRANGER_ELSEWHERE,
        INGRESS_CONTROLLER,
        (NS, POSTGRES),
        (NS, _pod("intake", "migration")),
    ):
        assert not _allowed(POLICIES, KAFKA, stranger, 9092), stranger
    # its own brokers replicate among themselves
    assert _allowed(POLICIES, KAFKA, (NS, KAFKA), 9091)


def test_only_the_ingress_reaches_the_services() -> None:
    for service, port in SERVICE_PORTS.items():
        pod = _pod(service)
        assert _allowed(POLICIES, pod, INGRESS_CONTROLLER, port), service
        assert _allowed(POLICIES, pod, PROMETHEUS, port), service  # scraping /metrics, documented
        for stranger in (
            STRANGER_HERE,
            STRANGER_ELSEWHERE,
            (NS, POSTGRES),
            (NS, KAFKA),
            ("ingress-nginx", {"app": "other"}),
        ):
            assert not _allowed(POLICIES, pod, stranger, port), (service, stranger)
        for other in SERVICE_PORTS:
            # services reach each other only for the registry's JWKS and tokens, and referral -> intake
            # (clearance); tests/static/test_service_calls.py derives these calls from the settings
            expected = service == "registry" or (service, other) == ("intake", "referral")
            assert _allowed(POLICIES, pod, (NS, _pod(other)), port) is expected, (other, service)


def test_policy_evaluator_sees_a_hole() -> None:
    opened = copy.deepcopy(POLICIES)
    pg = next(p for p in opened if p["metadata"]["name"] == "refnet-postgres-ingress")
    pg["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})
    assert _allowed(opened, POSTGRES, STRANGER_ELSEWHERE, 5432)
    no_default = [
        p for p in POLICIES if p["metadata"]["name"] not in {"default-deny-ingress", "refnet-kafka-ingress"}
    ]
    assert _allowed(no_default, KAFKA, STRANGER_HERE, 9092)


def test_egress_is_limited() -> None:
    for service in SERVICE_PORTS:
        for component in ("service", "migration"):
            pod = _pod(service, component)
            assert egress_allowed(POLICIES, NS, pod, NS, POSTGRES, 5432)
            assert egress_allowed(POLICIES, NS, pod, "kube-system", {"k8s-app": "kube-dns"}, 53, "UDP")
            assert not egress_allowed(POLICIES, NS, pod, *STRANGER_HERE, 80)
            assert not egress_allowed(POLICIES, NS, pod, *STRANGER_ELSEWHERE, 443)
        assert egress_allowed(POLICIES, NS, _pod(service), NS, KAFKA, 9092)
        assert egress_allowed(POLICIES, NS, _pod(service), NS, _pod("registry"), 8001)
    internet = [
        p
        for p in POLICIES
        if any("ipBlock" in peer for r in p["spec"].get("egress") or [] for peer in r.get("to") or [])
    ]
    assert len(internet) == 1
    selector = internet[0]["spec"]["podSelector"]
    allowed = {s for s in SERVICE_PORTS if selector_matches(selector, _pod(s))}
    assert allowed == {"registry", "referral"}
    blocks = [peer["ipBlock"] for r in internet[0]["spec"]["egress"] for peer in r["to"]]
    for block in blocks:
        assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(block["except"])


# ---------------------------------------------------------------------------------------------------------
# Kafka topics
# ---------------------------------------------------------------------------------------------------------
TOPICS_FILE = K8S_DIR / "kafka-topics.yaml"
DELIVERY_FILE = K8S_DIR / "examples" / "kafka-topic-delivery.yaml"


def _topics(path: Path) -> dict[str, dict[str, Any]]:
    return {d["spec"]["topicName"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def test_topics_are_the_contract_topics_and_their_dlqs() -> None:
    topics = _topics(TOPICS_FILE)
    assert set(topics) == set(CONTRACT_TOPICS) | {f"{t}.dlq" for t in CONTRACT_TOPICS}
    delivery = _topics(DELIVERY_FILE)
    assert set(delivery) == {"refnet.delivery.example-agency", "refnet.delivery.example-agency.dlq"}
    for name, topic in {**topics, **delivery}.items():
        spec = topic["spec"]
        assert spec["replicas"] == 3, name
        assert spec["config"]["min.insync.replicas"] == 2, name
        assert isinstance(spec["config"]["retention.ms"], int), name
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "refnet-kafka", name
    for t in CONTRACT_TOPICS:
        assert topics[t]["spec"]["partitions"] >= 6, t


def _comment_before(text: str, marker: str) -> str:
    """The comment lines of the YAML document that contains `marker`."""
    for chunk in text.split("\n---"):
        if marker in chunk:
            return "\n".join(line for line in chunk.splitlines() if line.lstrip().startswith("#"))
    return ""


def test_audit_and_delivery_retention_is_stated_and_justified() -> None:
    audit_ms = _topics(TOPICS_FILE)["refnet.audit.access"]["spec"]["config"]["retention.ms"]
    comment = _comment_before(TOPICS_FILE.read_text(), "topicName: refnet.audit.access\n")
    assert "retention" in comment.lower() and str(audit_ms) in comment
    assert f"{audit_ms // 86_400_000} days" in comment
    assert len(comment.splitlines()) >= 5, "the audit topic's retention needs a justification"

    delivery_ms = _topics(DELIVERY_FILE)["refnet.delivery.example-agency"]["spec"]["config"]["retention.ms"]
    header = _comment_before(DELIVERY_FILE.read_text(), "refnet.delivery.<agency_id>")
    assert str(delivery_ms) in header and f"{delivery_ms // 86_400_000} days" in header
    assert "retention" in header.lower() and len(header.splitlines()) >= 8


# ---------------------------------------------------------------------------------------------------------
# kustomizations and ingress
# ---------------------------------------------------------------------------------------------------------
def test_every_manifest_is_in_exactly_one_kustomization() -> None:
    listed: dict[Path, int] = {}
    for path in kustomization_files():
        kust = yaml.safe_load(path.read_text())
        assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
        assert kust["namespace"] == NS
        for resource in kust["resources"]:
            target = (path.parent / resource).resolve()
            assert target.is_file(), f"{path}: {resource} does not exist"
            listed[target] = listed.get(target, 0) + 1
    for manifest in k8s_manifest_files():
        count = listed.get(manifest.resolve(), 0)
        if "examples" in manifest.relative_to(K8S_DIR).parts:
            assert count == 0, f"{manifest} is a template and must not be applied"
        else:
            assert count == 1, f"{manifest} is listed {count} times"


def test_migrations_are_a_separate_kustomization() -> None:
    main = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    migrate = yaml.safe_load((K8S_DIR / "migrate" / "kustomization.yaml").read_text())
    assert not [r for r in main["resources"] if "migrate" in r]
    assert sorted(migrate["resources"]) == sorted(f"{s}-migrate.yaml" for s in SERVICE_PORTS)


def test_every_object_is_in_the_namespace() -> None:
    for path, doc in DOCS:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NS
        else:
            assert doc["metadata"].get("namespace") == NS, (path, doc["metadata"]["name"])


def test_ingress_routes_to_existing_services_and_hides_probes() -> None:
    services = k8s_by_kind("Service")
    ingress = k8s_by_kind("Ingress")["refnet"]
    paths = []
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            backend = p["backend"]["service"]
            assert backend["name"] in services
            port_names = {port["name"] for port in services[backend["name"]]["spec"]["ports"]}
            assert backend["port"]["name"] in port_names
            paths.append(p["path"])
    for hidden in ("/metrics", "/healthz", "/readyz", "/"):
        assert hidden not in paths
    assert ingress["spec"]["tls"], "TLS terminates at the ingress"


# ---------------------------------------------------------------------------------------------------------
# TLS to PostgreSQL: every Deployment and Job that reaches the database verifies the server (issue 17)
# ---------------------------------------------------------------------------------------------------------
def _database_tls_problems(docs: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    config = next(d for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "refnet-config")
    data = config["data"]
    problems = []
    if data.get("REFNET_DATABASE_SSLMODE") != "verify-full":
        problems.append(f"ConfigMap: REFNET_DATABASE_SSLMODE is {data.get('REFNET_DATABASE_SSLMODE')!r}")
    rootcert = Path(data.get("REFNET_DATABASE_SSLROOTCERT", "/nowhere/none"))
    clients = 0
    for _, doc in docs:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        spec = doc["spec"]["template"]["spec"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            names = {e["name"] for e in c.get("env") or []}
            if not any(n.endswith("DATABASE_URL") for n in names):
                continue
            clients += 1
            where = f"{doc['kind']}/{doc['metadata']['name']} container {c['name']}"
            if not any((ef.get("configMapRef") or {}).get("name") == "refnet-config" for ef in c.get("envFrom") or []):
                problems.append(f"{where}: does not take refnet-config")
            if names & {"REFNET_DATABASE_SSLMODE", "REFNET_DATABASE_SSLROOTCERT"} or any(
                n.endswith(("_DATABASE_SSLMODE", "_DATABASE_SSLROOTCERT")) for n in names
            ):
                problems.append(f"{where}: overrides the ConfigMap's database TLS")
            mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            ca = [
                n for n, path in mounts.items()
                if Path(path) == rootcert.parent
                and (volumes.get(n, {}).get("secret") or {}).get("secretName") == "refnet-postgres-ca"
            ]
            if not ca:
                problems.append(f"{where}: does not mount refnet-postgres-ca at {rootcert.parent}")
            for n in ca:  # the operator's Secret holds the CA's private key too: only ca.crt
                items = volumes[n]["secret"].get("items") or []
                if [(i["key"], i["path"]) for i in items] != [("ca.crt", rootcert.name)]:
                    problems.append(f"{where}: mounts more of refnet-postgres-ca than ca.crt")
    if clients < 8:
        problems.append(f"only {clients} database clients found")
    return problems


def test_every_database_client_verifies_the_server() -> None:
    assert _database_tls_problems(DOCS) == []
    # CloudNativePG's CA Secret: `<cluster>-ca`, for the cluster postgres.yaml declares.
    assert "refnet-postgres" in k8s_by_kind("Cluster")


@pytest.mark.parametrize("how", ["sslmode", "mount", "whole-secret", "override"])
def test_database_tls_checker_catches_breakage(how: str) -> None:
    docs = copy.deepcopy(DOCS)
    config = next(d for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "refnet-config")
    job = next(d for _, d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "refnet-intake-migrate")
    spec = job["spec"]["template"]["spec"]
    if how == "sslmode":
        config["data"]["REFNET_DATABASE_SSLMODE"] = "require"
    elif how == "mount":
        spec["containers"][0]["volumeMounts"] = [
            m for m in spec["containers"][0]["volumeMounts"] if m["name"] != "postgres-ca"
        ]
    elif how == "whole-secret":
        next(v for v in spec["volumes"] if v["name"] == "postgres-ca")["secret"].pop("items")
    else:
        spec["containers"][0]["env"].append({"name": "REFNET_INTAKE_DATABASE_SSLMODE", "value": "disable"})
    assert _database_tls_problems(docs) != []


# ---------------------------------------------------------------------------------------------------------
# the platform bootstrap as a Job (issue 17): deploy/k8s/bootstrap
# ---------------------------------------------------------------------------------------------------------
BOOTSTRAP_FILE = K8S_DIR / "bootstrap" / "bootstrap.yaml"
PLATFORM_SECRETS = {"admin.json": "refnet-platform-admin-credentials",
                    "referral-service.json": "refnet-referral-service-credentials"}


def _bootstrap_docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(BOOTSTRAP_FILE.read_text()) if d}


def test_the_bootstrap_job_runs_the_compose_command_and_only_it_has_the_database() -> None:
    from ._support import COMPOSE_FILE, load_compose, pod_spec

    compose = load_compose(COMPOSE_FILE)
    docs = _bootstrap_docs()
    kust = yaml.safe_load((K8S_DIR / "bootstrap" / "kustomization.yaml").read_text())
    assert kust["resources"] == ["bootstrap.yaml"]
    spec = docs["Job"]["spec"]["template"]["spec"]
    steps = {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}
    assert [c["name"] for c in spec["initContainers"]] == ["load", "bootstrap"]
    assert [c["name"] for c in spec["containers"]] == ["store"]
    bootstrap = steps["bootstrap"]
    compose_args = compose["services"]["platform-bootstrap"]["command"]
    assert bootstrap["args"][:2] == compose_args[:2] == ["bootstrap", "platform"]
    assert bootstrap["args"][2] == "--credentials-dir"
    # As the registry's database owner, like its migration Job (the same Secret, the same labels).
    migrate = k8s_by_kind("Job")["refnet-registry-migrate"]
    url = {e["name"]: e for e in bootstrap["env"]}["REFNET_REGISTRY_DATABASE_URL"]
    assert url == {e["name"]: e for e in _container(migrate)["env"]}["REFNET_REGISTRY_DATABASE_URL"]
    labels = docs["Job"]["spec"]["template"]["metadata"]["labels"]
    assert {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")} == {
        "app.kubernetes.io/name": "refnet-registry", "app.kubernetes.io/component": "migration"}
    # The API token only where the Secrets are read and written; the database URL only in bootstrap.
    assert spec["automountServiceAccountToken"] is False
    for name, step in steps.items():
        mounts = {m["name"] for m in step.get("volumeMounts") or []}
        assert ("api" in mounts) is (name != "bootstrap"), name
        has_db = any("DATABASE_URL" in e["name"] for e in step.get("env") or [])
        assert has_db is (name == "bootstrap"), name
        dirs = {m["mountPath"] for m in step["volumeMounts"] if m["name"] == "credentials"}
        assert dirs == {bootstrap["args"][3]}, name
    credentials = next(v for v in spec["volumes"] if v["name"] == "credentials")
    assert credentials["emptyDir"]["medium"] == "Memory"
    # Least privilege: read and patch the two Secrets by name; create (which RBAC cannot name) and nothing else.
    rules = docs["Role"]["rules"]
    named = [r for r in rules if r.get("resourceNames")]
    assert named == [{"apiGroups": [""], "resources": ["secrets"],
                      "resourceNames": sorted(PLATFORM_SECRETS.values()), "verbs": ["get", "patch"]}]
    assert [r for r in rules if not r.get("resourceNames")] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]
    assert docs["RoleBinding"]["subjects"][0]["name"] == spec["serviceAccountName"] == docs["Role"]["metadata"]["name"]
    # referral mounts the Secret the Job writes, under the key the Job writes it.
    referral = pod_spec(k8s_by_kind("Deployment")["refnet-referral"])
    mounted = {v["secret"]["secretName"]: [i["key"] for i in v["secret"]["items"]]
               for v in referral["volumes"] if "secret" in v}
    assert mounted["refnet-referral-service-credentials"] == ["referral-service.json"]
    readme = (K8S_DIR / "README.md").read_text()
    for name in PLATFORM_SECRETS.values():
        assert f"`{name}`" in readme, name


def _tls_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, cert_file


def test_the_bootstrap_job_stores_the_credentials_as_secrets_and_loads_them_again(tmp_path: Path) -> None:
    """The Job's load and store steps, run against a stand-in for the Kubernetes API (HTTPS, bearer token,
    the Role's verbs on the two Secrets): the first run creates both Secrets, the next loads them back
    byte for byte -- so `refnet bootstrap platform` finds its clients' keys and changes nothing -- and a
    changed file is patched in."""
    import base64
    import json
    import os
    import ssl
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    script = tmp_path / "secrets.py"
    script.write_text(_bootstrap_docs()["ConfigMap"]["data"]["secrets.py"])
    prefix = "/api/v1/namespaces/refnet/secrets"
    stored: dict[str, dict[str, Any]] = {}
    calls: list[tuple[str, str]] = []
    allowed_names = set(PLATFORM_SECRETS.values())

    class Api(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
            data = json.dumps(body or {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            return dict(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def _handle(self) -> None:
            calls.append((self.command, self.path))
            if self.headers.get("Authorization") != "Bearer the-token":
                return self._answer(401)
            name = self.path.removeprefix(prefix).strip("/")
            if self.command == "POST" and not name:
                body = self._body()
                if body["metadata"]["name"] in stored:
                    return self._answer(409)
                stored[body["metadata"]["name"]] = body
                return self._answer(201, body)
            if name not in allowed_names:  # the Role: get and patch these two only
                return self._answer(403)
            if name not in stored:
                return self._answer(404)
            if self.command == "GET":
                return self._answer(200, stored[name])
            assert self.headers["Content-Type"] == "application/merge-patch+json"
            stored[name]["data"] |= self._body()["data"]
            return self._answer(200, stored[name])

        do_GET = do_POST = do_PATCH = _handle

        def log_message(self, *args: Any) -> None:
            return None

    cert, key, ca = _tls_server_cert(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("the-token")
    (account / "namespace").write_text("refnet")
    (account / "ca.crt").write_bytes(ca.read_bytes())

    def run(step: str, folder: Path) -> None:
        env = {"PATH": os.environ["PATH"], "CREDENTIALS_DIR": str(folder), "SERVICE_ACCOUNT_DIR": str(account),
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.server_address[1])}
        done = subprocess.run([sys.executable, str(script), step], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-1500:]

    try:
        first = tmp_path / "first"
        first.mkdir()
        run("load", first)
        assert list(first.iterdir()) == []
        contents = {file: json.dumps({"client_id": file, "private_key_pem": os.urandom(8).hex()}).encode()
                    for file in PLATFORM_SECRETS}
        for file, content in contents.items():
            (first / file).write_bytes(content)
        run("store", first)
        assert {name: base64.b64decode(s["data"][file]) for file, name in PLATFORM_SECRETS.items()
                for s in [stored[name]]} == {PLATFORM_SECRETS[f]: c for f, c in contents.items()}

        second = tmp_path / "second"
        second.mkdir()
        run("load", second)
        assert {p.name: p.read_bytes() for p in second.iterdir()} == contents
        assert all(p.stat().st_mode & 0o077 == 0 for p in second.iterdir())
        (second / "admin.json").write_bytes(b'{"client_id": "admin.json", "rotated": true}')
        posts = sum(1 for method, _ in calls if method == "POST")
        run("store", second)
        assert base64.b64decode(stored["refnet-platform-admin-credentials"]["data"]["admin.json"]) == (
            b'{"client_id": "admin.json", "rotated": true}')
        assert sum(1 for method, _ in calls if method == "POST") == posts  # patched, not created again
    finally:
        server.shutdown()
