"""Shared pieces of the static deployment checks: file locations, loaders, and the checkers themselves.

The checkers return lists of problems (empty = fine) instead of asserting, so the tests can run each one
both on the real files (expecting no problem) and on deliberately broken copies (expecting the problem
to be found). A checker that cannot see a breakage is itself a failing test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
K8S_DIR = REPO / "deploy" / "k8s"
SECRETS_DIR = REPO / "deploy" / "secrets"
POSTGRES_INIT_DIR = REPO / "deploy" / "postgres" / "init"
OPERATIONS_DOC = REPO / "docs" / "operations.md"

# The project's conventions (docs/contract.md, docs/architecture.md).
SERVICE_PORTS = {"registry": 8001, "intake": 8002, "referral": 8003, "audit": 8004}
CONTRACT_TOPICS = (
    "refnet.registry.events",
    "refnet.intake.events",
    "refnet.referral.events",
    "refnet.audit.access",
)

# The Kubernetes version the manifests are validated against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.34.0"


# --------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------
def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path} is not a YAML mapping"
    return doc


def k8s_manifest_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/k8s (kustomization files are not manifests)."""
    return sorted(p for p in K8S_DIR.rglob("*.yaml") if p.name != "kustomization.yaml")


def kustomization_files() -> list[Path]:
    return sorted(K8S_DIR.rglob("kustomization.yaml"))


def load_k8s_docs(files: list[Path] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in files if files is not None else k8s_manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append((path, doc))
    return docs


def k8s_by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in load_k8s_docs() if d.get("kind") == kind}


def walk_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string (keys included) in a parsed YAML tree, with a readable location."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str):
                yield f"{path}/{key} (key)", key
            yield from walk_strings(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


# --------------------------------------------------------------------------------------------------------
# docker compose
# --------------------------------------------------------------------------------------------------------
COMPOSE_TOP_LEVEL = {"name", "services", "networks", "volumes", "secrets", "configs", "include"}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
_NAMED_VOLUME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _names(value: Any) -> list[str]:
    """Names from a Compose list-or-mapping field (depends_on, networks, secrets, configs)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [str(k) for k in value]
    names = []
    for item in value:
        if isinstance(item, dict):
            names.append(str(item.get("source", "")))
        else:
            names.append(str(item))
    return names


def has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    return isinstance(check, dict) and not check.get("disable") and bool(check.get("test"))


def _volume_source(entry: Any) -> tuple[str | None, str]:
    """(source, type) of a service volume entry; source None for an anonymous volume."""
    if isinstance(entry, dict):
        return entry.get("source"), entry.get("type", "volume")
    parts = str(entry).split(":")
    if len(parts) == 1:
        return None, "volume"
    source = parts[0]
    if source.startswith((".", "/", "~")) or "/" in source:
        return source, "bind"
    return source, "volume"


def compose_reference_problems(doc: dict[str, Any], base: Path = REPO) -> list[str]:
    """Every reference in a compose document resolves. Returns the problems found."""
    problems: list[str] = []
    for key in doc:
        if key not in COMPOSE_TOP_LEVEL and not str(key).startswith("x-"):
            problems.append(f"unknown top-level key {key!r}")
    services = doc.get("services")
    if not isinstance(services, dict) or not services:
        return [*problems, "no services"]
    secrets = doc.get("secrets") or {}
    configs = doc.get("configs") or {}
    volumes = doc.get("volumes") or {}
    networks = doc.get("networks") or {}
    used_secrets: set[str] = set()

    for name, svc in services.items():
        where = f"service {name!r}"
        if not isinstance(svc, dict):
            problems.append(f"{where} is not a mapping")
            continue
        if "image" not in svc and "build" not in svc:
            problems.append(f"{where} has neither image nor build")
        build = svc.get("build")
        if build is not None:
            context = base / (build if isinstance(build, str) else build.get("context", "."))
            if not context.is_dir():
                problems.append(f"{where}: build context {context} does not exist")
            elif (
                isinstance(build, dict)
                and "dockerfile" in build
                and not (context / build["dockerfile"]).is_file()
            ):
                problems.append(f"{where}: dockerfile {build['dockerfile']} does not exist")

        depends = svc.get("depends_on") or {}
        for dep in _names(depends):
            if dep not in services:
                problems.append(f"{where} depends on unknown service {dep!r}")
                continue
            if dep == name:
                problems.append(f"{where} depends on itself")
            condition = (
                depends[dep].get("condition", "service_started")
                if isinstance(depends, dict)
                else ("service_started")
            )
            if condition not in DEPENDS_CONDITIONS:
                problems.append(f"{where}: unknown depends_on condition {condition!r}")
            if condition == "service_healthy" and not has_healthcheck(services[dep]):
                problems.append(f"{where} waits for {dep!r} to be healthy, but {dep!r} has no healthcheck")
            if condition == "service_completed_successfully" and services[dep].get("restart", "no") != "no":
                problems.append(f"{where} waits for {dep!r} to complete, but {dep!r} restarts")

        for secret in _names(svc.get("secrets")):
            used_secrets.add(secret)
            if secret not in secrets:
                problems.append(f"{where} uses undeclared secret {secret!r}")
        for config in _names(svc.get("configs")):
            if config not in configs:
                problems.append(f"{where} uses undeclared config {config!r}")
        for network in _names(svc.get("networks")):
            if network != "default" and network not in networks:
                problems.append(f"{where} uses undeclared network {network!r}")
        for entry in svc.get("volumes") or []:
            source, kind = _volume_source(entry)
            if source is None:
                continue
            if kind == "volume":
                if not _NAMED_VOLUME.match(source) or source not in volumes:
                    problems.append(f"{where} uses undeclared volume {source!r}")
            elif kind == "bind" and not (base / source).exists():
                problems.append(f"{where} mounts {source!r}, which does not exist")

        env_files = svc.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, (str, dict)) else env_files:
            path, required = (
                (entry, True) if isinstance(entry, str) else (entry.get("path"), entry.get("required", True))
            )
            if required and not (base / str(path)).is_file():
                problems.append(f"{where}: env_file {path!r} does not exist")

    for secret, spec in secrets.items():
        if not isinstance(spec, dict) or not ({"file", "environment", "external"} & set(spec)):
            problems.append(f"secret {secret!r} has no source")
        if secret not in used_secrets:
            problems.append(f"secret {secret!r} is declared but no service uses it")
    for config, spec in configs.items():
        if not isinstance(spec, dict) or not ({"file", "content", "environment", "external"} & set(spec)):
            problems.append(f"config {config!r} has no source")
        elif "file" in spec and not (base / spec["file"]).is_file():
            problems.append(f"config {config!r}: file {spec['file']} does not exist")
    return problems


# Variables the compose file may take from the operator's environment; each must have a default.
COMPOSE_HOST_VARIABLES = {"REFNET_PUBLIC_URL", "REFNET_HTTP_PORT"}
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")


def compose_interpolation_problems(doc: dict[str, Any]) -> list[str]:
    """Every `$` in a value is either `$$` (a literal dollar) or `${KNOWN_VAR:-default}`.

    Compose substitutes `$name` from the host environment before anything runs; an unescaped shell or
    nginx variable silently becomes an empty string.
    """
    problems: list[str] = []
    for where, text in walk_strings(doc):
        i = 0
        while i < len(text):
            if text[i] != "$":
                i += 1
                continue
            if text[i + 1 : i + 2] == "$":
                i += 2
                continue
            match = _INTERPOLATION.match(text, i)
            if not match:
                problems.append(f"{where}: unescaped '$' in {text[i : i + 20]!r}")
                i += 1
                continue
            if match["name"] not in COMPOSE_HOST_VARIABLES:
                problems.append(f"{where}: unexpected host variable {match['name']}")
            elif match["op"] != ":-":
                problems.append(f"{where}: {match['name']} has no default (use ${{{match['name']}:-...}})")
            i = match.end()
    return problems


def compose_unescape(text: str) -> str:
    """What Compose hands the container for a string without host variables: `$$` -> `$`."""
    return text.replace("$$", "$")


# Environment variable names that would hold a secret value if set inline.
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE|CREDENTIAL|(^|_)KEY($|_)", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^@\s/]+@")


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) for item in env]
        return {k: (v[0] if v else "") for k, *v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def inline_secret_problems(doc: dict[str, Any]) -> list[str]:
    """No secret value sits in the compose file: secret-looking variables point at /run/secrets files,
    and no URL carries a password."""
    problems = []
    for name, svc in (doc.get("services") or {}).items():
        for var, value in environment_of(svc).items():
            if _URL_WITH_PASSWORD.search(value):
                problems.append(f"service {name!r}: {var} holds a URL with a password")
            file_ref = var.endswith("_FILE") and value.startswith("/run/secrets/")
            if _SECRET_NAME.search(var) and not file_ref:
                problems.append(f"service {name!r}: {var} looks like an inline secret")
    for secret, spec in (doc.get("secrets") or {}).items():
        if isinstance(spec, dict) and "environment" in spec:
            problems.append(f"secret {secret!r} comes from an environment variable, not a file")
    return problems


# --------------------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined as Docker joins them."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if line.endswith("\\"):
            pending += raw.rstrip()[:-1]
            continue
        full = (pending + raw).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    if pending:
        word, _, rest = pending.strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instr in dockerfile_instructions(text):
        if instr[0] == "FROM":
            stages.append([instr])
        elif stages:
            stages[-1].append(instr)
    return stages


def exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def healthcheck_command(stage: list[tuple[str, str]]) -> list[str] | None:
    """The exec-form command of the stage's HEALTHCHECK, or None."""
    for word, args in stage:
        if word == "HEALTHCHECK":
            _, _, cmd = args.partition("CMD")
            return exec_form(cmd.strip())
    return None


def final_stage_problems(text: str) -> list[str]:
    """The image that ships: multi-stage, runs as a non-root user, has a HEALTHCHECK on /readyz."""
    stages = dockerfile_stages(text)
    if len(stages) < 2:
        return ["not a multi-stage build"]
    final = stages[-1]
    problems = []
    users = [args for word, args in final if word == "USER"]
    if not users:
        problems.append("final stage sets no USER (it would run as root)")
    else:
        user = users[-1].split(":")[0].strip()
        if user in {"root", "0", ""}:
            problems.append(f"final stage runs as {user or 'nobody named'}")
    checks = [args for word, args in final if word == "HEALTHCHECK"]
    if not checks:
        problems.append("final stage has no HEALTHCHECK")
    elif checks[-1].strip().upper() == "NONE":
        problems.append("final stage disables the HEALTHCHECK")
    else:
        cmd = healthcheck_command(final)
        if not cmd:
            problems.append("HEALTHCHECK is not in exec form")
        elif cmd[0] not in {"python", "python3"} or not any("/readyz" in part for part in cmd):
            problems.append("HEALTHCHECK does not probe /readyz with python")
        elif not any("PORT" in part for part in cmd):
            problems.append("HEALTHCHECK does not use $PORT")
    build_tools = re.compile(r"apt-get install|apk add|\bgcc\b|build-essential|\bmake\b|pip (install|wheel)")
    for word, args in final:
        if word == "RUN" and build_tools.search(args):
            problems.append(f"final stage installs or builds: RUN {args[:60]}")
    return problems


# --------------------------------------------------------------------------------------------------------
# .dockerignore (Docker's semantics: last matching pattern wins; a pattern matching a parent folder
# matches everything inside it; `!` re-includes)
# --------------------------------------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(patterns_text: str, path: str) -> bool:
    rules = []
    for line in patterns_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip().strip("/")
        rules.append((negate, _pattern_regex(pattern)))
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


# --------------------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------------------
def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def workload_problems(doc: dict[str, Any], *, probes: bool) -> list[str]:
    """Security context and resources of every container; probes too for long-running workloads."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    problems = []
    try:
        spec = pod_spec(doc)
    except (KeyError, TypeError):
        return [f"{name}: no pod template"]
    pod_sc = spec.get("securityContext") or {}
    containers = spec.get("containers") or []
    if not containers:
        problems.append(f"{name}: no containers")
    for c in [*containers, *(spec.get("initContainers") or [])]:
        cname = f"{name} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{cname}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{cname}: runs as uid 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cname}: root filesystem is writable")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cname}: privilege escalation allowed")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{cname}: capabilities not dropped")
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in (resources.get(kind) or {}):
                    problems.append(f"{cname}: no {res} {kind[:-1]}")
        if probes and c in containers:
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                if got != path:
                    problems.append(f"{cname}: {probe} does not GET {path} (got {got!r})")
    return problems


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics ({} or absent matches everything)."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _port_allowed(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        lo = p.get("port")
        hi = p.get("endPort", lo)
        if lo is None or (isinstance(lo, int) and lo <= port <= hi):
            return True
    return False


def _peer_matches(peer: dict[str, Any], policy_ns: str, ns: str, labels: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        return False  # pods are not addressed by ipBlock here; callers check ipBlocks separately
    ns_labels = {"kubernetes.io/metadata.name": ns}
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif ns != policy_ns:
        return False
    return selector_matches(peer.get("podSelector"), labels)


def ingress_allowed(
    policies: list[dict[str, Any]],
    target_ns: str,
    target: dict[str, str],
    source_ns: str,
    source: dict[str, str],
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Would NetworkPolicy admit a connection from pod `source` to pod `target` on `port`?"""
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == target_ns
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(p["spec"].get("podSelector"), target)
    ]
    if not selecting:
        return True  # no policy selects the pod: everything is allowed
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            if not _port_allowed(rule, port, protocol):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_matches(peer, target_ns, source_ns, source) for peer in peers):
                return True
    return False


def egress_allowed(
    policies: list[dict[str, Any]],
    source_ns: str,
    source: dict[str, str],
    target_ns: str,
    target: dict[str, str],
    port: int,
    protocol: str = "TCP",
) -> bool:
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == source_ns
        and "Egress" in p["spec"].get("policyTypes", [])
        and selector_matches(p["spec"].get("podSelector"), source)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("egress") or []:
            if not _port_allowed(rule, port, protocol):
                continue
            peers = rule.get("to")
            if not peers or any(_peer_matches(peer, source_ns, target_ns, target) for peer in peers):
                return True
    return False


# A schema of our own for Strimzi's KafkaTopic (a CRD: kubernetes-validate has no schema for it).
# It follows the KafkaTopic v1 API (Strimzi >= 0.49): only the fields RefNet uses, nothing unknown.
KAFKA_TOPIC_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1"},
        "kind": {"const": "KafkaTopic"},
        "metadata": {
            "type": "object",
            "required": ["name", "labels"],
            "properties": {
                # a DNS-1123 subdomain
                "name": {
                    "type": "string",
                    "maxLength": 253,
                    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                },
                "namespace": {"type": "string"},
                "labels": {
                    "type": "object",
                    "required": ["strimzi.io/cluster"],
                    "additionalProperties": {"type": "string"},
                },
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["topicName", "partitions", "replicas", "config"],
            "additionalProperties": False,
            "properties": {
                # Kafka's own rule for topic names
                "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
                    "propertyNames": {"pattern": r"^[a-z0-9]+(\.[a-z0-9]+)*$"},
                },
            },
        },
    },
}


# Strimzi's KafkaUser, as far as RefNet uses it (SCRAM-SHA-512 or TLS client certificates, simple ACLs): a
# schema of our own, like KAFKA_TOPIC_SCHEMA (kubernetes-validate has none for CRDs).
KAFKA_USER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1"},
        "kind": {"const": "KafkaUser"},
        "metadata": KAFKA_TOPIC_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object",
            "required": ["authentication", "authorization"],
            "additionalProperties": False,
            "properties": {
                "authentication": {
                    "type": "object", "required": ["type"], "additionalProperties": False,
                    "properties": {"type": {"enum": ["scram-sha-512", "tls"]}},
                },
                "authorization": {
                    "type": "object", "required": ["type", "acls"], "additionalProperties": False,
                    "properties": {
                        "type": {"const": "simple"},
                        "acls": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["resource", "operations"], "additionalProperties": False,
                            "properties": {
                                "resource": {
                                    "type": "object", "required": ["type", "name", "patternType"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                                        "name": {"type": "string", "minLength": 1},
                                        "patternType": {"enum": ["literal", "prefix"]},
                                    },
                                },
                                "operations": {"type": "array", "minItems": 1, "items": {"enum": [
                                    "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
                                    "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All"]}},
                                "host": {"type": "string"},
                            },
                        }},
                    },
                },
            },
        },
    },
}
