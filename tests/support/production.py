"""The production configuration (docker-compose.yml), run as processes on this machine.

Every RefNet container of the compose file becomes a process with exactly the environment compose gives it:
its ``environment`` with the x- anchors merged and ``${VAR:-default}`` interpolated, the image's own ``ENV``,
its secrets as files, and -- for those that reach the database -- the compose entrypoint itself (run with
/bin/sh), which builds the database URL from the role's password file. What cannot be the same here is
changed in one place, :func:`production_env`, and each change is recorded with its reason, so the test can
assert that everything else is compose's value, verbatim:

- host names and ports (``postgres``, ``kafka-1..3``, ``registry``, ``intake``, the listen address and ports)
  are this machine's;
- paths under ``/run/secrets`` and bind mounts point into a temporary directory that stands for
  ``deploy/secrets/``, with every secret the compose file declares generated as its README says;
- :data:`OVERRIDES`: the few settings the embedded broker cannot honour.

PostgreSQL and the broker are started as the tests start them (``deploy.launcher.infra``), PostgreSQL with
TLS only, a certificate from a CA made here, and password (SCRAM) authentication for the service roles, which
the compose init script (deploy/postgres/init/10-refnet-databases.sh) creates.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from joserfc.jwk import ECKey, KeySet

from deploy.launcher.infra import Broker, free_port
from shared.client_auth import ASSERTION_TYPE, client_assertion
from tests.integration.test_database_tls import TlsPostgres, enable_tls, make_ca, tls_bin_dir

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
K8S_DIR = REPO / "deploy" / "k8s"
SERVICES = ("registry", "intake", "referral", "audit")

#: Settings of compose that the embedded broker (Tansu) cannot honour, and why. Nothing else is overridden
#: (host names, ports and file locations aside, see the module's docstring).
OVERRIDES: dict[str, tuple[str, str]] = {
    # Compose authenticates every client with SASL/SCRAM-SHA-512; Tansu with --authentication cannot create
    # its users (its persistent storage engines are not built in), so the broker here has no authentication.
    "REFNET_KAFKA_SECURITY_PROTOCOL": ("PLAINTEXT", "Tansu cannot authenticate SCRAM users"),
    # Apache Kafka supports idempotent producers; Tansu refuses InitProducerId.
    "REFNET_KAFKA_ENABLE_IDEMPOTENCE": ("false", "Tansu refuses InitProducerId"),
}

#: The image's own ENV (deploy/Dockerfile, final stage); REFNET_HOST there is compose's value anyway.
IMAGE_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}")


def load_compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))  # anchors and `<<` merges resolved
    assert isinstance(doc, dict)
    return doc


def interpolate(value: str) -> str:
    """What compose hands the container with no host variable set: ``${VAR:-default}`` is the default and
    ``$$`` a literal ``$``."""
    parts = value.split("$$")
    return "$".join(_INTERPOLATION.sub(lambda m: m["default"], part) for part in parts)


def compose_environment(doc: dict[str, Any], service: str) -> dict[str, str]:
    env = doc["services"][service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: environment as a mapping"
    return {str(k): interpolate("" if v is None else str(v)) for k, v in env.items()}


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        if path.name != "kustomization.yaml" and "examples" not in path.parts:
            docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def k8s_environment(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, str]:
    """The variables a Deployment's or Job's first container gets -- the ConfigMaps it takes, then its own env
    -- with their values (``secret:<name>/<key>`` for one taken from a Secret)."""
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    workload = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    container = workload["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env |= {k: str(v) for k, v in maps[source["configMapRef"]["name"]].items()}
    for entry in container.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        env[entry["name"]] = f"secret:{ref['name']}/{ref['key']}" if ref else str(entry.get("value", ""))
    return env


def k8s_environment_names(docs: list[dict[str, Any]], kind: str, name: str) -> set[str]:
    return set(k8s_environment(docs, kind, name))


# --------------------------------------------------------------------------------------------------------
# the environment of one container, mapped to this machine
# --------------------------------------------------------------------------------------------------------
@dataclass
class Machine:
    """Where things are on this machine."""

    secrets_dir: Path  # stands for ./deploy/secrets
    postgres_port: int
    broker: str
    ports: dict[str, int]
    bin_dir: Path = Path(sys.executable).parent  # where `refnet` is

    def service_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


@dataclass
class Container:
    name: str
    argv: list[str]
    env: dict[str, str]
    #: variable -> why its value is not compose's (host, port, file location, or an entry of OVERRIDES)
    changed: dict[str, str] = field(default_factory=dict)


def _secret_files(doc: dict[str, Any]) -> dict[str, str]:
    """compose secret name -> its file's name in deploy/secrets."""
    return {name: Path(spec["file"]).name for name, spec in (doc.get("secrets") or {}).items()}


def production_env(doc: dict[str, Any], service: str, machine: Machine) -> Container:
    """The process compose would run for ``service``: its command line and environment, mapped here."""
    svc = doc["services"][service]
    compose_env = compose_environment(doc, service)
    mounted = {f"/run/secrets/{s}": machine.secrets_dir / _secret_files(doc)[s] for s in svc.get("secrets") or []}
    binds: dict[str, Path] = {}
    for volume in svc.get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        assert Path(source) == Path("./deploy/secrets"), f"{service}: a bind mount this test does not map: {volume}"
        binds[target] = machine.secrets_dir
    urls = {f"http://{s}:{port}": machine.service_url(s) for s, port in
            (("registry", 8001), ("intake", 8002), ("referral", 8003), ("audit", 8004))}
    env: dict[str, str] = {}
    changed: dict[str, str] = {}
    for key, value in compose_env.items():
        new = value
        if key in OVERRIDES:
            new, why = OVERRIDES[key]
            changed[key] = f"override: {why}"
        elif key == "REFNET_KAFKA_BOOTSTRAP":
            assert value == "kafka-1:9092,kafka-2:9092,kafka-3:9092", value
            new, changed[key] = machine.broker, "host"
        elif key == "REFNET_HOST":
            new, changed[key] = "127.0.0.1", "host"
        elif key == "PORT" or key == f"REFNET_{service.upper()}_PORT":
            new, changed[key] = str(machine.ports[service]), "port"
        elif value.startswith("/run/secrets/"):
            assert value in mounted, f"{service}: {key} names {value}, a secret it does not mount"
            new, changed[key] = str(mounted[value]), "secret file"
        elif any(value.startswith(url) for url in urls):
            url = next(u for u in urls if value.startswith(u))
            new, changed[key] = urls[url] + value[len(url):], "host"
        env[key] = new
    argv = [str(a) for a in svc.get("command") or []]
    for i, arg in enumerate(argv):
        for target, here in binds.items():
            if arg == target or arg.startswith(target + "/"):
                argv[i] = str(here) + arg[len(target):]
    entrypoint = svc.get("entrypoint")
    if entrypoint is not None:
        # The compose entrypoint (x-db-entrypoint), run as written -- `$$` is compose's escape -- with the
        # database's host and port made this machine's.
        script = [interpolate(str(part)) for part in entrypoint]
        hosts = [i for i, part in enumerate(script) if "@postgres:5432/" in part]
        assert len(hosts) == 1, f"{service}: the entrypoint names the database host once"
        script[hosts[0]] = script[hosts[0]].replace("@postgres:5432/", f"@127.0.0.1:{machine.postgres_port}/")
        argv = [*script, *argv]
    else:
        argv = ["refnet", *argv]  # the image's ENTRYPOINT
    base = {"PATH": f"{machine.bin_dir}:/usr/bin:/bin", "HOME": str(machine.secrets_dir.parent),
            "TMPDIR": str(machine.secrets_dir.parent / "tmp"), **IMAGE_ENV}
    return Container(service, argv, {**base, **env}, changed)


# --------------------------------------------------------------------------------------------------------
# the secret files, made as deploy/secrets/README.md says
# --------------------------------------------------------------------------------------------------------
def _signing_key() -> str:
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"}, private=True, auto_kid=True)
    return json.dumps(KeySet([key]).as_dict(private=True))


def _ed25519_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def write_secrets(doc: dict[str, Any], directory: Path, tls_files: dict[str, Path]) -> None:
    """Every secret file the compose file declares, except those the platform bootstrap writes."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, file_name in _secret_files(doc).items():
        path = directory / file_name
        if name == "referral_service_credentials":
            continue  # written by platform-bootstrap
        if file_name in tls_files:
            shutil.copyfile(tls_files[file_name], path)
        elif file_name.endswith(".jwks.json"):
            path.write_text(_signing_key())
        elif file_name.endswith(".b64"):
            path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        elif file_name.endswith(".pem"):
            path.write_text(_ed25519_pem())
        elif file_name.endswith(".properties"):
            password = secrets.token_hex(32)
            path.write_text(f"password={password}\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n")
        elif "." not in file_name:  # passwords: hex
            path.write_text(secrets.token_hex(32) + "\n")
        else:
            raise AssertionError(f"no generator for the compose secret {name} ({file_name})")
        path.chmod(0o600)


# --------------------------------------------------------------------------------------------------------
# the processes
# --------------------------------------------------------------------------------------------------------
@dataclass
class Production:
    doc: dict[str, Any]
    machine: Machine
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start(self, service: str) -> subprocess.Popen[bytes]:
        container = production_env(self.doc, service, self.machine)
        self.containers[service] = container
        log = open(self.logs / f"{service}.log", "ab")  # noqa: SIM115 -- the child keeps it
        try:
            # A session of its own: cleaning up kills the process group, whatever the process started.
            proc = subprocess.Popen(container.argv, env=container.env, cwd=self.workdir, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.processes[service] = proc
        return proc

    def log_tail(self, service: str, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.logs / f"{service}.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def run_to_completion(self, services: list[str], timeout: float = 120) -> None:
        """One-shot jobs, started together (as compose starts what waits on the same condition)."""
        procs = {s: self.start(s) for s in services}
        deadline = time.monotonic() + timeout
        for service, proc in procs.items():
            try:
                code = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{service} did not finish in {timeout:.0f}s:\n{self.log_tail(service)}") from None
            assert code == 0, f"{service} exited with {code}:\n{self.log_tail(service)}"

    def wait_ready(self, services: list[str], timeout: float = 90) -> None:
        pending = set(services)
        deadline = time.monotonic() + timeout
        while pending:
            for service in sorted(pending):
                proc = self.processes[service]
                assert proc.poll() is None, f"{service} exited with {proc.returncode}:\n{self.log_tail(service)}"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(self.machine.service_url(service) + "/readyz", timeout=2).status_code == 200:
                        pending.discard(service)
            assert time.monotonic() < deadline, f"not ready after {timeout:.0f}s: {sorted(pending)}:\n" + "\n".join(
                self.log_tail(s, 10) for s in sorted(pending))
            time.sleep(0.3)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # the group, even if its leader has ended
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _postgres_with_tls(workdir: Path) -> tuple[TlsPostgres, Path, dict[str, Path]]:
    """A TLS-only PostgreSQL: the superuser (this test) without a password, every other role by SCRAM."""
    ca, ca_key, ca_cert = make_ca(workdir, "refnet-production-ca")
    pg = TlsPostgres(workdir / "pgdata", free_port(), workdir / "postgres.log")
    pg.init()
    enable_tls(pg, ca_key, ca_cert)
    hba = pg.data_dir / "pg_hba.conf"
    hba.write_text("hostssl all postgres 127.0.0.1/32 trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
    pg.start()
    return pg, ca, {"postgres_ca.crt": ca, "postgres_server.crt": pg.data_dir / "server.crt",
                    "postgres_server.key": pg.data_dir / "server.key"}


def _run_init_script(pg: TlsPostgres, ca: Path, secrets_dir: Path) -> None:
    """deploy/postgres/init/10-refnet-databases.sh, as its header says to run it against another server."""
    env = {"PATH": f"{tls_bin_dir()}:/usr/bin:/bin", "PGHOST": "127.0.0.1", "PGPORT": str(pg.port),
           "PGUSER": "postgres", "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(ca),
           "REFNET_DB_SECRETS_DIR": str(secrets_dir)}
    done = subprocess.run(["bash", str(REPO / "deploy/postgres/init/10-refnet-databases.sh")], env=env,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]


@contextlib.contextmanager
def production(workdir: Path) -> Iterator[Production]:
    """PostgreSQL (TLS) and the broker, the secrets, topics-init and the migrations, platform-bootstrap, then
    the four services, ready. Everything is stopped on the way out, however the test ended."""
    doc = load_compose()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # PostgreSQL runs as another user when we are root
    (workdir / "logs").mkdir(exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    secrets_dir = workdir / "secrets"
    pg: TlsPostgres | None = None
    broker: Broker | None = None
    stack: Production | None = None
    try:
        pg, ca, tls_files = _postgres_with_tls(workdir)
        broker = Broker(free_port(), workdir / "logs" / "broker.log")
        broker.start()
        write_secrets(doc, secrets_dir, tls_files)
        _run_init_script(pg, ca, secrets_dir)
        machine = Machine(secrets_dir, pg.port, broker.bootstrap, {s: free_port() for s in SERVICES})
        stack = Production(doc, machine, workdir)
        # compose's order (depends_on): topics-init and the migrations, then platform-bootstrap (after
        # registry-migrate), then the services.
        stack.run_to_completion(["topics-init", *(f"{s}-migrate" for s in SERVICES)])
        stack.run_to_completion(["platform-bootstrap"])
        for service in SERVICES:
            stack.start(service)
        stack.wait_ready(list(SERVICES))
        yield stack
    finally:
        if stack is not None:
            stack.stop()
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()
        # The logs stay (pytest keeps its last few temporary folders); the data and the keys go.
        for gone in ("pgdata", "secrets", "tmp"):
            shutil.rmtree(workdir / gone, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------------------------------------
def fetch_token(credentials: dict[str, Any], scopes: list[str]) -> str:
    """Client credentials with an RFC 7523 assertion, as an agency's case system gets its tokens."""
    audience = credentials.get("audience") or credentials["token_url"]
    form = {"grant_type": "client_credentials", "scope": " ".join(scopes), "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(credentials["client_id"], audience,
                                                 credentials["private_key_pem"])}
    answer = httpx.post(credentials["token_url"], data=form, timeout=30)
    assert answer.status_code == 200, f"token refused: {answer.status_code} {answer.text[:300]}"
    return str(answer.json()["access_token"])


def new_client_key() -> tuple[str, dict[str, Any]]:
    """(private PEM, public JWKS) of a fresh ES256 key, the kid its thumbprint (as client assertions name it)."""
    key = ECKey.generate_key("P-256", private=True)
    public = dict(key.as_dict(private=False))
    public.update({"kid": key.thumbprint(), "use": "sig", "alg": "ES256"})
    return key.as_pem(private=True).decode(), {"keys": [public]}
