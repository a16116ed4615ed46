"""The production configuration completes a referral (issue 17): every container of docker-compose.yml that runs
RefNet -- topics-init, the four migrations, platform-bootstrap, the four services -- as a process of its own with
the environment compose gives it (tests/support/production.py says what is mapped to this machine and why), TLS
to PostgreSQL with verify-full, the platform bootstrapped by its one-shot job, two agencies registered through
the registry's API with the administrator's credentials the bootstrap wrote, and one referral end to end.

The Kubernetes shape is checked against the same settings: the ConfigMap and each Deployment's env must name
what compose names (the differences are listed below, each with its reason).

This file starts its own PostgreSQL, broker and services; it shares nothing with the e2e session stack.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.scenarios import (
    PERSON_FIELDS,
    SCREENING_FIELDS,
    People,
    consent_body,
    permit,
    screening_body,
)
from tests.support.production import (
    OVERRIDES,
    SERVICES,
    Machine,
    Production,
    compose_environment,
    fetch_token,
    k8s_docs,
    k8s_environment,
    k8s_environment_names,
    load_compose,
    new_client_key,
    production,
    production_env,
)

# Settings one shape has and the other has not, on purpose.
K8S_ONLY = {
    # Strimzi's listener is TLS (SASL_SSL): the cluster CA; compose's broker network is internal (SASL_PLAINTEXT).
    "REFNET_KAFKA_SSL_CAFILE": "all",
    # The ingress controller's pod range, believed about the client's address (the token throttle keys on it).
    "FORWARDED_ALLOW_IPS": "registry",
    # Pools sized for the autoscalers' maxima; compose runs a fixed number of replicas with the defaults.
    "REFNET_{S}_DATABASE_POOL_SIZE": "all",
    "REFNET_{S}_DATABASE_POOL_OVERFLOW": "all",
}
# Settings both shapes have with values that differ by nature (hosts, the public URL, the broker's listener).
DIFFER_BY_SHAPE = {"REFNET_KAFKA_BOOTSTRAP", "REFNET_KAFKA_SECURITY_PROTOCOL", "REFNET_ISSUER", "REFNET_PUBLIC_URL"}
# The compose entrypoint builds the database URL from these (Kubernetes takes the URL from a Secret instead).
COMPOSE_PLUMBING = {"DB_USER", "DB_NAME", "DB_PASSWORD_FILE", "DB_URL_VARIABLE"}


def _k8s_only(service: str) -> set[str]:
    return {name.replace("{S}", service.upper()) for name, where in K8S_ONLY.items() if where in ("all", service)}


@pytest.mark.parametrize("service", SERVICES)
def test_compose_and_kubernetes_name_the_same_settings(service: str) -> None:
    doc, docs = load_compose(), k8s_docs()
    compose_env = compose_environment(doc, service)
    compose_names = (set(compose_env) - COMPOSE_PLUMBING) | {compose_env["DB_URL_VARIABLE"]}
    k8s_names = k8s_environment_names(docs, "Deployment", f"refnet-{service}")
    assert compose_names - k8s_names == set(), "in compose only"
    assert k8s_names - compose_names == _k8s_only(service), "in Kubernetes only"
    # The same values too, but where the shapes differ by nature: addresses, file locations, the listener.
    k8s_env = k8s_environment(docs, "Deployment", f"refnet-{service}")
    for key in sorted(compose_names & k8s_names):
        if not (key in DIFFER_BY_SHAPE or key.endswith(("_FILE", "_URL", "DATABASE_SSLROOTCERT"))):
            assert compose_env[key] == k8s_env[key], key
    # ...and the migration jobs the same way (audit's migrates as another role, with its own variable).
    job_env = compose_environment(doc, f"{service}-migrate")
    job_names = (set(job_env) - COMPOSE_PLUMBING) | {job_env["DB_URL_VARIABLE"]}
    k8s_job = k8s_environment_names(docs, "Job", f"refnet-{service}-migrate")
    assert job_names == k8s_job - {"REFNET_KAFKA_SSL_CAFILE"}


def test_only_hosts_ports_files_and_the_listed_overrides_differ_from_compose(tmp_path: Path) -> None:
    doc = load_compose()
    machine = Machine(tmp_path / "secrets", 5999, "127.0.0.1:1", {s: 9000 + i for i, s in enumerate(SERVICES)})
    for service in (*SERVICES, *(f"{s}-migrate" for s in SERVICES), "platform-bootstrap", "topics-init"):
        container = production_env(doc, service, machine)
        compose_env = compose_environment(doc, service)
        assert set(compose_env) <= set(container.env), service
        for key, value in compose_env.items():
            if key in container.changed:
                reason = container.changed[key]
                assert reason in ("host", "port", "secret file") or reason.startswith("override:"), (key, reason)
                assert not reason.startswith("override:") or key in OVERRIDES
            else:
                assert container.env[key] == value, (service, key)
        # The changes are the host, port and secret mappings only, beside the overrides.
        assert {k for k, why in container.changed.items() if why.startswith("override:")} <= set(OVERRIDES)
    # TLS to PostgreSQL is compose's, untouched: verify-full against the CA secret.
    registry = production_env(doc, "registry", machine)
    assert registry.env["REFNET_DATABASE_SSLMODE"] == "verify-full"
    assert registry.env["REFNET_DATABASE_SSLROOTCERT"] == str(machine.secrets_dir / "postgres_ca.crt")


# --------------------------------------------------------------------------------------------------------
# the referral, end to end
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    with production(tmp_path_factory.mktemp("production")) as running:
        yield running


def _poll(probe: Any, ok: Any, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    value = probe()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.25)
        value = probe()
    return value


class Agency:
    def __init__(self, stack: Production, admin: str, name: str, kind: str, scopes: list[str]) -> None:
        self.stack = stack
        pem, jwks = new_client_key()
        created = httpx.post(stack.machine.service_url("registry") + "/agencies", timeout=30,
                             headers={"Authorization": f"Bearer {admin}"},
                             json={"name": name, "kind": kind, "country": "IT", "scopes": scopes, "jwks": jwks})
        assert created.status_code == 201, f"{created.status_code} {created.text[:300]}"
        self.id = str(created.json()["id"])
        admin_file = json.loads((stack.machine.secrets_dir / "admin.json").read_text())
        self.credentials = {"client_id": created.json()["client_id"], "private_key_pem": pem,
                            "token_url": admin_file["token_url"], "audience": admin_file.get("audience")}
        self.scopes = scopes
        self._token = ""

    def headers(self, purpose: str = "case_management") -> dict[str, str]:
        self._token = self._token or fetch_token(self.credentials, self.scopes)
        return {"Authorization": f"Bearer {self._token}", "X-Purpose": purpose, "X-Acting-User": "caseworker.1"}

    def call(self, method: str, service: str, path: str, purpose: str = "case_management",
             **kwargs: Any) -> httpx.Response:
        headers = self.headers(purpose) | kwargs.pop("headers", {})
        return httpx.request(method, self.stack.machine.service_url(service) + path, headers=headers, timeout=30,
                             **kwargs)


def _minimised(view: dict[str, Any], shared: list[str]) -> dict[str, Any]:
    """The view with only what a recipient of these categories may see (tests/e2e/scenarios.py's rules)."""
    person = set().union(*(PERSON_FIELDS.get(c, set()) for c in shared))
    screening = set().union(*(SCREENING_FIELDS.get(c, set()) for c in shared))
    top = {"id", "status", "owner_agency", "created_at"} | ({"age_band", "is_minor"}
                                                           if "demographics" in shared else set())
    return {**{k: v for k, v in view.items() if k in top},
            "person": {k: v for k, v in view.get("person", {}).items() if k in person},
            "screening": {k: v for k, v in view.get("screening", {}).items() if k in screening}}


def _field_names(view: dict[str, Any]) -> set[str]:
    return {*view, *(f"person.{k}" for k in view.get("person", {})), *(f"screening.{k}" for k in view.get(
        "screening", {}))}


def test_a_referral_end_to_end_in_the_production_configuration(stack: Production) -> None:
    # The bootstrap job wrote both clients into the folder that stands for deploy/secrets, where compose
    # mounts referral-service.json into referral as the referral_service_credentials secret.
    # TLS to PostgreSQL: the server takes TLS connections only (pg_hba: hostssl), and every process verified
    # its certificate -- verify-full against the CA secret is compose's own setting, not this test's.
    database_clients = {n: c for n, c in stack.containers.items() if "DB_URL_VARIABLE" in c.env}
    assert len(database_clients) == 9  # four services, four migrations, platform-bootstrap
    for name, container in database_clients.items():
        assert container.env.get("REFNET_DATABASE_SSLMODE") == "verify-full", name
        assert container.env.get("REFNET_DATABASE_SSLROOTCERT") == str(
            stack.machine.secrets_dir / "postgres_ca.crt"), name
    written = {p.name for p in stack.machine.secrets_dir.iterdir()}
    assert {"admin.json", "referral-service.json"} <= written
    assert stack.containers["referral"].env["REFNET_REFERRAL_CREDENTIALS_FILE"] == str(
        stack.machine.secrets_dir / "referral-service.json")

    admin = fetch_token(json.loads((stack.machine.secrets_dir / "admin.json").read_text()), ["admin"])
    working = ["registry:read", "cases:read", "cases:write", "consent:write", "referrals:read", "referrals:write",
               "events:read"]
    sender = Agency(stack, admin, "Smoke sender NGO", "ngo", working)
    recipient = Agency(stack, admin, "Smoke recipient agency", "un_agency", working)
    auditor = Agency(stack, admin, "Smoke oversight office", "oversight", ["audit:read"])

    person = People.default().adult  # fictional; never printed
    shared = ["identity", "protection_needs"]
    body = {"person": person.person_body(gender="feminine", citizenship="ER", languages=["ti"], documents=["none"]),
            "screening": screening_body(person, needs=["protection.rsd"]),
            "initial_consent": consent_body(person, permit(recipient.id, *shared))}
    created = sender.call("POST", "intake", "/cases", json=body)
    assert created.status_code == 201, created.status_code
    case_id = created.json()["id"]

    # The referral: referral asks intake for clearance with a token of its own client (platform-bootstrap's).
    key = f"smoke-{uuid.uuid4().hex}"  # the same request when a 503 asks to try again
    referral = _poll(lambda: sender.call(
        "POST", "referral", "/referrals", headers={"Idempotency-Key": key},
        json={"case_id": case_id, "to_agency": recipient.id, "pathway": "protection", "service_type": "protection.rsd",
              "priority": "urgent", "reason": person.referral_reason, "shared_categories": shared}),
        lambda r: r.status_code != 503)
    assert referral.status_code == 201, f"{referral.status_code} {referral.headers.get('content-type')}"
    referral_id = referral.json()["id"]

    # The recipient receives it, accepts it, and reads the minimised case.
    inbox = _poll(lambda: recipient.call("GET", "referral", f"/referrals/{referral_id}"),
                  lambda r: r.status_code == 200)
    assert inbox.status_code == 200 and inbox.json()["status"] == "requested"
    for step in ("received", "accepted"):
        moved = recipient.call("POST", "referral", f"/referrals/{referral_id}/transitions", json={"to": step})
        assert moved.status_code == 200 and moved.json()["status"] == step, moved.status_code
    view = _poll(lambda: recipient.call("GET", "intake", f"/cases/{case_id}", purpose="referral"),
                 lambda r: r.status_code == 200)
    assert view.status_code == 200, view.status_code
    # Only field names in what a failure prints (pytest shows compared values): no personal data.
    assert _field_names(view.json()) == _field_names(_minimised(view.json(), shared))
    assert {"person.given_name", "person.family_name", "screening.needs"} <= _field_names(view.json())
    assert view.json()["person"].get("given_name") == person.given_name, "the shared identity is not shown"

    # The access is in audit's log: the recipient's read, for the referral, of the shared categories.
    def recipient_reads() -> list[dict[str, Any]]:
        page = auditor.call("GET", "audit", f"/audit/cases/{case_id}/access", purpose="audit")
        assert page.status_code == 200, page.status_code
        return [a for a in page.json()["items"] if a["agency"] == recipient.id and a["action"] == "case.read"]

    reads = _poll(recipient_reads, bool)
    assert reads, "the recipient's read is not in the audit log"
    assert reads[0]["outcome"] == "success" and reads[0]["purpose"] == "referral"
    assert sorted(reads[0]["data_categories"]) == sorted(shared)
