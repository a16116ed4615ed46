"""docker-compose.yml, checked without a Docker engine (none runs in this project's CI).

Each checker also runs on deliberately broken copies of the file, so a checker that cannot see the
breakage fails here instead of passing quietly.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ._support import (
    COMPOSE_FILE,
    K8S_DIR,
    POSTGRES_INIT_DIR,
    REPO,
    SECRETS_DIR,
    SERVICE_PORTS,
    compose_interpolation_problems,
    compose_reference_problems,
    compose_unescape,
    environment_of,
    has_healthcheck,
    inline_secret_problems,
    load_compose,
)

REFNET_IMAGE_SERVICES = [*SERVICE_PORTS, *(f"{s}-migrate" for s in SERVICE_PORTS), "topics-init"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def services(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["services"]


# ---------------------------------------------------------------------------------------------------------
# it parses, and every reference resolves
# ---------------------------------------------------------------------------------------------------------
def test_compose_parses_with_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the top-level `version` key is obsolete in the Compose spec"
    assert set(REFNET_IMAGE_SERVICES) <= set(services(compose))


def test_every_reference_resolves(compose: dict[str, Any]) -> None:
    assert compose_reference_problems(compose) == []


def _break(doc: dict[str, Any], how: str) -> tuple[dict[str, Any], str]:
    """A broken copy of the compose document, and a word the problem report must contain."""
    d = copy.deepcopy(doc)
    s = d["services"]
    if how == "depends_on":
        s["intake"]["depends_on"]["no-such-service"] = {"condition": "service_started"}
        return d, "no-such-service"
    if how == "secret":
        s["intake"]["secrets"].append("not_declared_secret")
        return d, "not_declared_secret"
    if how == "unused_secret":
        d["secrets"]["orphan_secret"] = {"file": "./deploy/secrets/orphan"}
        return d, "orphan_secret"
    if how == "config":
        s["gateway"]["configs"][0]["source"] = "missing_config"
        return d, "missing_config"
    if how == "volume":
        s["postgres"]["volumes"][0] = "pgdata-typo:/var/lib/postgresql"
        return d, "pgdata-typo"
    if how == "bind_mount":
        s["postgres"]["volumes"][1] = "./deploy/postgres/no-such-dir:/docker-entrypoint-initdb.d:ro"
        return d, "no-such-dir"
    if how == "network":
        s["intake"]["networks"].append("nowhere")
        return d, "nowhere"
    if how == "no_image":
        del s["intake"]["image"]
        del s["intake"]["build"]
        return d, "neither image nor build"
    if how == "dockerfile":
        s["intake"]["build"] = {"context": ".", "dockerfile": "deploy/Dockerfile.missing"}
        return d, "Dockerfile.missing"
    if how == "env_file":
        s["intake"]["env_file"] = ["deploy/no-such.env"]
        return d, "no-such.env"
    if how == "healthy_without_healthcheck":
        del s["registry"]["healthcheck"]
        return d, "no healthcheck"
    if how == "job_restarts":
        s["intake-migrate"]["restart"] = "always"
        return d, "restarts"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "depends_on",
        "secret",
        "unused_secret",
        "config",
        "volume",
        "bind_mount",
        "network",
        "no_image",
        "dockerfile",
        "env_file",
        "healthy_without_healthcheck",
        "job_restarts",
    ],
)
def test_reference_checker_catches_breakage(compose: dict[str, Any], how: str) -> None:
    broken, word = _break(compose, how)
    problems = compose_reference_problems(broken)
    assert any(word in p for p in problems), problems


def test_no_unescaped_dollar_and_host_variables_have_defaults(compose: dict[str, Any]) -> None:
    assert compose_interpolation_problems(compose) == []


def test_interpolation_checker_catches_breakage(compose: dict[str, Any]) -> None:
    d = copy.deepcopy(compose)
    d["configs"]["gateway_conf"]["content"] += "\nproxy_set_header X-Real-IP $remote_addr;\n"
    d["services"]["intake"]["environment"]["REFNET_ISSUER"] = "${REFNET_PUBLIC_URL}"
    problems = compose_interpolation_problems(d)
    assert any("$remote_addr" in p for p in problems), problems
    assert any("no default" in p for p in problems), problems


# ---------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------
def test_third_party_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in services(compose).items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: image {image!r} has no pinned tag"
        if "build" not in svc:
            assert re.match(r"^\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?$", tag), f"{name}: {image!r} is not a version"


def test_refnet_services_share_the_one_image(compose: dict[str, Any]) -> None:
    images = {services(compose)[name]["image"] for name in REFNET_IMAGE_SERVICES}
    assert len(images) == 1, images
    for name in REFNET_IMAGE_SERVICES:
        assert services(compose)[name]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}



def kafka_nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Kafka nodes (the init job runs the same image for its CLI tools)."""
    return {n: s for n, s in services(compose).items()
            if s["image"].startswith("apache/kafka:") and "KAFKA_NODE_ID" in environment_of(s)}

# ---------------------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------------------
def test_kafka_is_three_combined_kraft_nodes(compose: dict[str, Any]) -> None:
    kafka = kafka_nodes(compose)
    assert len(kafka) == 3, sorted(kafka)
    assert len({s["image"] for s in kafka.values()}) == 1
    envs = {n: environment_of(s) for n, s in kafka.items()}
    node_ids = {n: e["KAFKA_NODE_ID"] for n, e in envs.items()}
    assert sorted(node_ids.values()) == ["1", "2", "3"]
    voters = {n: e["KAFKA_CONTROLLER_QUORUM_VOTERS"] for n, e in envs.items()}
    assert len(set(voters.values())) == 1
    expected_voters = {f"{node_ids[n]}@{n}:9093" for n in kafka}
    assert set(next(iter(voters.values())).split(",")) == expected_voters
    assert len({e["CLUSTER_ID"] for e in envs.values()}) == 1
    for name, env in envs.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false", name
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"CLIENT://{name}:9092,BROKER://{name}:9094", name
        data = [v for v in kafka[name]["volumes"] if v.endswith(":" + env["KAFKA_LOG_DIRS"])]
        assert data, f"{name}: its log dir is not on a volume"
        assert has_healthcheck(kafka[name]), name


def test_bootstrap_lists_every_broker(compose: dict[str, Any]) -> None:
    kafka = sorted(kafka_nodes(compose))
    for name in REFNET_IMAGE_SERVICES:
        bootstrap = environment_of(services(compose)[name])["REFNET_KAFKA_BOOTSTRAP"]
        assert sorted(h.split(":")[0] for h in bootstrap.split(",")) == kafka, name


def test_producers_are_idempotent(compose: dict[str, Any]) -> None:
    for name in REFNET_IMAGE_SERVICES:
        assert environment_of(services(compose)[name]).get("REFNET_KAFKA_ENABLE_IDEMPOTENCE") == "true", name


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------------
def test_postgres_is_pinned_and_initialised_by_the_init_script(compose: dict[str, Any]) -> None:
    pg = services(compose)["postgres"]
    # Built from deploy/postgres/Dockerfile: the official image, pinned, plus pgBackRest.
    assert pg["build"] == {"context": "./deploy/postgres"}
    base = re.search(r"^FROM (\S+)", (REPO / "deploy/postgres/Dockerfile").read_text(), re.M)
    assert base and re.match(r"^postgres:\d+\.\d+", base.group(1)), base
    mounts = {v.split(":")[1]: v.split(":")[0] for v in pg["volumes"]}
    init_src = mounts["/docker-entrypoint-initdb.d"]
    assert (REPO / init_src).resolve() == POSTGRES_INIT_DIR.resolve()
    scripts = sorted(POSTGRES_INIT_DIR.glob("*.sh"))
    assert scripts, "no init script"
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script} is not executable (the image would source it)"
    # PostgreSQL 18 images keep data under /var/lib/postgresql/<major>/docker: the volume is the parent.
    assert mounts.get("/var/lib/postgresql") == "postgres-data"
    env = environment_of(pg)
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_superuser_password"
    assert "postgres_superuser_password" in pg["secrets"]
    # Every password file the init script reads is mounted into the postgres container.
    text = "\n".join(s.read_text() for s in scripts)
    read = set(re.findall(r"\b(db_[a-z_]+_password)\b", text))
    assert read, "the init script reads no password files"
    assert read <= set(pg["secrets"]), read - set(pg["secrets"])


def _command_settings(svc: dict[str, Any]) -> dict[str, str]:
    args = svc["command"]
    return dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-c")


def test_postgres_archives_every_wal_segment_and_is_backed_up_daily(compose: dict[str, Any]) -> None:
    """Point-in-time recovery needs both halves: WAL archived continuously and base backups."""
    pg, backup = services(compose)["postgres"], services(compose)["postgres-backup"]
    settings = _command_settings(pg)
    assert settings["archive_mode"] == "on" and settings["wal_level"] in ("replica", "logical")
    assert settings["archive_command"].startswith("pgbackrest --stanza=refnet archive-push %p")
    assert int(settings["archive_timeout"]) <= 300
    conf = (REPO / "deploy/postgres/pgbackrest/pgbackrest.conf").read_text()
    assert "[refnet]" in conf and "repo1-cipher-type=aes-256-cbc" in conf
    # The 30-day window docs/operations.md promises.
    assert "repo1-retention-full-type=time" in conf and "repo1-retention-full=30" in conf
    assert "30-day window" in (REPO / "docs/operations.md").read_text()
    script = "\n".join(backup["command"])
    assert "stanza-create" in script and "backup" in script and "sleep 86400" in script
    mounts = {v.split(":")[1]: v.split(":")[0] for v in backup["volumes"]}
    pg_mounts = {v.split(":")[1]: v.split(":")[0] for v in pg["volumes"]}
    for path in ("/var/lib/postgresql", "/var/lib/pgbackrest", "/var/run/postgresql"):
        assert mounts[path] == pg_mounts[path], path  # the same data, repository and socket
    assert backup["image"] == pg["image"] and has_healthcheck(backup)
    for svc in (pg, backup):
        assert svc["entrypoint"][0] == "with-cipher-pass" and "pgbackrest_cipher_pass" in svc["secrets"]


def test_database_roles_match_init_script(compose: dict[str, Any]) -> None:
    text = (POSTGRES_INIT_DIR / "10-refnet-databases.sh").read_text()
    created_roles = set(re.findall(r"CREATE ROLE (\w+) LOGIN", text))
    created_dbs = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+)", text))
    for name in REFNET_IMAGE_SERVICES:
        env = environment_of(services(compose)[name])
        if "DB_USER" not in env:
            continue
        assert env["DB_USER"] in created_roles, name
        assert env["DB_NAME"] in created_dbs, name
        secret = Path(env["DB_PASSWORD_FILE"]).name
        assert secret in services(compose)[name]["secrets"], name
    audit = environment_of(services(compose)["audit"])
    audit_migrate = environment_of(services(compose)["audit-migrate"])
    assert audit["DB_USER"] == "refnet_audit_writer"
    assert audit_migrate["DB_USER"] == "refnet_audit_owner"
    assert created_dbs["refnet_audit"] == "refnet_audit_owner"
    assert audit_migrate["DB_URL_VARIABLE"] == "REFNET_AUDIT_MIGRATION_DATABASE_URL"
    assert audit["DB_URL_VARIABLE"] == "REFNET_AUDIT_DATABASE_URL"
    # The audit service never sees the owner's password.
    assert "db_audit_owner_password" not in services(compose)["audit"]["secrets"]


# ---------------------------------------------------------------------------------------------------------
# order: topics and migrations before services
# ---------------------------------------------------------------------------------------------------------
def test_jobs_run_before_the_services(compose: dict[str, Any]) -> None:
    s = services(compose)
    topics = s["topics-init"]
    assert topics["command"] == ["topics", "ensure"]
    assert topics["restart"] == "no"
    kafka = list(kafka_nodes(compose))
    # topics-init authenticates as a user kafka-acls-init makes, which itself waits for every node.
    assert topics["depends_on"]["kafka-acls-init"]["condition"] == "service_completed_successfully"
    acls = s["kafka-acls-init"]
    assert acls["restart"] == "no"
    assert {k: acls["depends_on"][k]["condition"] for k in kafka} == dict.fromkeys(kafka, "service_healthy")
    for svc in SERVICE_PORTS:
        job = s[f"{svc}-migrate"]
        assert job["command"] == ["migrate", svc]
        assert job["restart"] == "no"
        assert job["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert s[svc]["command"] == ["serve", svc]
        assert s[svc]["depends_on"][f"{svc}-migrate"]["condition"] == "service_completed_successfully"
        assert s[svc]["depends_on"]["topics-init"]["condition"] == "service_completed_successfully"


def test_replicas_and_ports(compose: dict[str, Any]) -> None:
    s = services(compose)
    assert s["intake"]["deploy"]["replicas"] == 2
    assert s["referral"]["deploy"]["replicas"] == 2
    for name, svc in s.items():
        if (svc.get("deploy") or {}).get("replicas", 1) > 1:
            assert "container_name" not in svc, name
            assert "ports" not in svc, f"{name}: replicas cannot share a published port"
    published = [n for n, v in s.items() if v.get("ports")]
    assert published == ["gateway"], published
    for port in s["gateway"]["ports"]:
        assert port.startswith("127.0.0.1:"), f"gateway publishes {port!r} beyond the host"


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, svc in services(compose).items():
        if svc.get("restart", "no") == "no":
            continue
        assert has_healthcheck(svc), name
    for svc, port in SERVICE_PORTS.items():
        test = " ".join(services(compose)[svc]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/readyz" in test, svc
        env = environment_of(services(compose)[svc])
        assert env["PORT"] == str(port) and env[f"REFNET_{svc.upper()}_PORT"] == str(port), svc


def test_infrastructure_is_on_the_internal_network_only(compose: dict[str, Any]) -> None:
    nets = compose["networks"]
    for name, svc in services(compose).items():
        if name == "postgres" or svc["image"].startswith("apache/kafka:"):
            assert "ports" not in svc, name
            for net in svc["networks"]:
                assert nets[net].get("internal") is True, f"{name} is on non-internal network {net}"


def test_refnet_containers_are_hardened(compose: dict[str, Any]) -> None:
    for name in REFNET_IMAGE_SERVICES:
        svc = services(compose)[name]
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert "user" not in svc or svc["user"] not in {"root", "0"}, name


# ---------------------------------------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------------------------------------
KEY_SECRETS = {
    "registry": ("registry_signing_key", "REFNET_REGISTRY_SIGNING_KEY_FILE"),
    "intake": ("intake_master_key", "REFNET_INTAKE_MASTER_KEY_FILE"),
    "referral": ("referral_master_key", "REFNET_REFERRAL_MASTER_KEY_FILE"),
    "audit": ("audit_checkpoint_key", "REFNET_AUDIT_CHECKPOINT_KEY_FILE"),
}


def test_key_files_are_compose_secrets(compose: dict[str, Any]) -> None:
    for svc, (secret, var) in KEY_SECRETS.items():
        assert secret in services(compose)[svc]["secrets"], svc
        assert environment_of(services(compose)[svc])[var] == f"/run/secrets/{secret}", svc
        others = [n for n, s in services(compose).items() if n != svc and secret in (s.get("secrets") or [])]
        assert others == [], f"{secret} is also given to {others}"


def test_the_registry_kek_is_a_secret_of_the_registry_and_its_migration_only(compose: dict[str, Any]) -> None:
    holders = sorted(n for n, s in services(compose).items() if "registry_kek" in (s.get("secrets") or []))
    assert holders == ["registry", "registry-migrate"]
    for name in holders:
        assert environment_of(services(compose)[name])["REFNET_REGISTRY_KEK_FILE"] == "/run/secrets/registry_kek"
    assert compose["secrets"]["registry_kek"] == {"file": "./deploy/secrets/registry_kek.b64"}


def test_no_secret_value_inline(compose: dict[str, Any]) -> None:
    assert inline_secret_problems(compose) == []
    text = COMPOSE_FILE.read_text()
    assert "BEGIN PRIVATE KEY" not in text and '"d":' not in text


def test_inline_secret_checker_catches_breakage(compose: dict[str, Any]) -> None:
    d = copy.deepcopy(compose)
    d["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    d["services"]["intake"]["environment"]["REFNET_INTAKE_DATABASE_URL"] = (
        "postgresql+asyncpg://refnet_intake:hunter2@postgres:5432/refnet_intake"
    )
    d["services"]["intake"]["environment"]["REFNET_INTAKE_MASTER_KEY"] = "c2VjcmV0"
    d["secrets"]["from_env"] = {"environment": "SOME_VAR"}
    problems = inline_secret_problems(d)
    for word in ("POSTGRES_PASSWORD", "URL with a password", "REFNET_INTAKE_MASTER_KEY", "from_env"):
        assert any(word in p for p in problems), (word, problems)


def test_secret_files_live_in_the_ignored_folder_and_are_documented(compose: dict[str, Any]) -> None:
    readme = (SECRETS_DIR / "README.md").read_text()
    for name, spec in compose["secrets"].items():
        path = (REPO / spec["file"]).resolve()
        assert path.parent == SECRETS_DIR.resolve(), f"secret {name} is outside deploy/secrets"
        rel = path.relative_to(REPO)
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", str(rel)], cwd=REPO)
        assert ignored.returncode == 0, f"{rel} is not git-ignored"
        assert f"`{path.name}`" in readme, f"deploy/secrets/README.md does not explain {path.name}"
    for kept in ("README.md", ".gitignore"):
        kept_rel = (SECRETS_DIR / kept).relative_to(REPO)
        result = subprocess.run(["git", "check-ignore", "-q", "--no-index", str(kept_rel)], cwd=REPO)
        assert result.returncode == 1, f"{kept_rel} would be ignored"


# ---------------------------------------------------------------------------------------------------------
# the database-password entrypoint really builds the URL (run with /bin/sh and a stand-in `refnet`)
# ---------------------------------------------------------------------------------------------------------
def _run_entrypoint(
    compose: dict[str, Any], service: str, tmp_path: Path, password: str | None
) -> subprocess.CompletedProcess[str]:
    svc = services(compose)[service]
    entrypoint = [compose_unescape(part) for part in svc["entrypoint"]]
    env = environment_of(svc)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "refnet"
    fake.write_text('#!/bin/sh\necho "args=$*"\nenv | sort\n')
    fake.chmod(0o755)
    secret = tmp_path / "secret"
    if password is not None:
        secret.write_text(password + "\n")
    run_env = {k: v for k, v in env.items() if k.startswith("DB_")}
    run_env["DB_PASSWORD_FILE"] = str(secret)
    run_env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return subprocess.run(
        [*entrypoint, *svc["command"]], env=run_env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("service", [*SERVICE_PORTS, *(f"{s}-migrate" for s in SERVICE_PORTS)])
def test_db_entrypoint_builds_the_database_url(compose: dict[str, Any], service: str, tmp_path: Path) -> None:
    env = environment_of(services(compose)[service])
    result = _run_entrypoint(compose, service, tmp_path, "0123abcd")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == "args=" + " ".join(services(compose)[service]["command"])
    expected = (
        f"{env['DB_URL_VARIABLE']}=postgresql+asyncpg://{env['DB_USER']}:0123abcd"
        f"@postgres:5432/{env['DB_NAME']}"
    )
    assert expected in out
    assert not [line for line in out if line.startswith(("DB_", "password="))], "helper variables leak"


def test_db_entrypoint_fails_without_its_secret(compose: dict[str, Any], tmp_path: Path) -> None:
    result = _run_entrypoint(compose, "intake", tmp_path, None)
    assert result.returncode != 0
    assert "args=" not in result.stdout


# ---------------------------------------------------------------------------------------------------------
# the gateway routes what the Kubernetes Ingress routes
# ---------------------------------------------------------------------------------------------------------
def test_gateway_routes_match_the_ingress(compose: dict[str, Any]) -> None:
    import yaml

    conf = compose["configs"]["gateway_conf"]["content"]
    routes = {
        path.rstrip("/"): svc
        for path, svc in re.findall(r"location\s+(/[^\s{]*)\s*\{[^}]*proxy_pass http://(\w+);", conf)
    }
    ingress = yaml.safe_load((K8S_DIR / "ingress.yaml").read_text())
    expected = {}
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            expected[p["path"].rstrip("/")] = p["backend"]["service"]["name"].removeprefix("refnet-")
    assert routes == expected
    for private in ("/metrics", "/healthz", "/readyz"):
        assert private not in routes
    upstreams = re.findall(r"upstream (\w+)\s*\{", conf)
    for name, port in SERVICE_PORTS.items():
        assert re.search(rf"upstream {name}\s*\{{[^}}]*server {name}:{port} resolve;", conf), name
    assert set(upstreams) == set(SERVICE_PORTS)


# ---------------------------------------------------------------------------------------------------------
# TLS to PostgreSQL: every container that reaches the database verifies the server (issue 17)
# ---------------------------------------------------------------------------------------------------------
def database_tls_problems(doc: dict[str, Any]) -> list[str]:
    """Every service and job that builds a database URL (the db-entrypoint) connects with verify-full against
    the CA it mounts, and PostgreSQL serves TLS with a certificate and key from its secrets."""
    problems = []
    users = {name: svc for name, svc in services(doc).items() if "DB_URL_VARIABLE" in environment_of(svc)}
    if not users:
        problems.append("no service reaches the database")
    for name, svc in users.items():
        env = environment_of(svc)
        if env.get("REFNET_DATABASE_SSLMODE") != "verify-full":
            problems.append(f"{name}: REFNET_DATABASE_SSLMODE is {env.get('REFNET_DATABASE_SSLMODE')!r}")
        if env.get("REFNET_DATABASE_SSLROOTCERT") != "/run/secrets/postgres_ca":
            problems.append(f"{name}: REFNET_DATABASE_SSLROOTCERT is not the postgres_ca secret")
        if "postgres_ca" not in (svc.get("secrets") or []):
            problems.append(f"{name}: does not mount the postgres_ca secret")
    pg = services(doc).get("postgres") or {}
    args = pg.get("command") or []
    settings = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-c")
    if settings.get("ssl") != "on":
        problems.append("postgres: ssl is not on")
    for setting, secret in (("ssl_cert_file", "postgres_server_cert"), ("ssl_key_file", "postgres_server_key")):
        if settings.get(setting) != f"/run/secrets/{secret}" or secret not in (pg.get("secrets") or []):
            problems.append(f"postgres: {setting} is not the {secret} secret")
    return problems


def test_every_database_client_verifies_the_server(compose: dict[str, Any]) -> None:
    assert database_tls_problems(compose) == []
    users = {n for n, s in services(compose).items() if "DB_URL_VARIABLE" in environment_of(s)}
    assert users == {*SERVICE_PORTS, *(f"{s}-migrate" for s in SERVICE_PORTS), "platform-bootstrap"}
    # The CA is a secret file like the others (git-ignored, documented); the server's key is one too.
    for name in ("postgres_ca", "postgres_server_cert", "postgres_server_key"):
        assert compose["secrets"][name]["file"].startswith("./deploy/secrets/"), name


@pytest.mark.parametrize("how", ["sslmode", "rootcert", "secret", "ssl-off", "server-key"])
def test_database_tls_checker_catches_breakage(compose: dict[str, Any], how: str) -> None:
    broken = copy.deepcopy(compose)
    svcs = services(broken)
    if how == "sslmode":
        svcs["intake"]["environment"]["REFNET_DATABASE_SSLMODE"] = "require"
    elif how == "rootcert":
        del svcs["audit-migrate"]["environment"]["REFNET_DATABASE_SSLROOTCERT"]
    elif how == "secret":
        svcs["platform-bootstrap"]["secrets"].remove("postgres_ca")
    elif how == "ssl-off":
        svcs["postgres"]["command"] = ["ssl=off" if a == "ssl=on" else a for a in svcs["postgres"]["command"]]
    else:
        svcs["postgres"]["secrets"].remove("postgres_server_key")
    assert database_tls_problems(broken) != []
