"""Every service-to-service call, derived from the settings the services read, is configured in both
production shapes and allowed by the NetworkPolicies.

A call is a ``*_url`` setting a service's code reads (``settings.intake_url`` in services/referral, the
issuer's JWKS that shared/auth.py fetches for every service), plus referral's token requests to the registry
(its credentials file names the registry's token endpoint). A new ``settings.<x>_url`` read anywhere shows
up here, and fails until compose sets it and a NetworkPolicy admits it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.settings import SERVICE_NAMES, ServiceSettings

from ._support import (
    COMPOSE_FILE,
    K8S_DIR,
    REPO,
    SERVICE_PORTS,
    egress_allowed,
    environment_of,
    ingress_allowed,
    k8s_by_kind,
    load_compose,
)
from .test_k8s import NS, POLICIES, _pod

# Settings that are URLs of this service itself or of things outside RefNet, not calls to a RefNet service.
NOT_A_SERVICE = {"database_url", "public_url", "base_url"}
# The setting a service's URL lives in.
URL_SETTINGS = {f"{name}_url": name for name in SERVICE_NAMES}
URL_READ = re.compile(r"settings\.(\w+_url)\b")


def _reads(path_glob: str) -> set[str]:
    found: set[str] = set()
    for path in REPO.glob(path_glob):
        if path.name.startswith("test_"):
            continue
        found |= set(URL_READ.findall(path.read_text()))
    return found


def derived_calls() -> set[tuple[str, str]]:
    """(caller service, setting) for every call to another RefNet service a service's code makes."""
    shared = _reads("shared/**/*.py")
    calls: set[tuple[str, str]] = set()
    for caller in SERVICE_NAMES:
        for setting in _reads(f"services/{caller}/**/*.py") | shared:
            if setting in NOT_A_SERVICE or setting == f"{caller}_url":
                continue
            if setting in {"jwks_url", "effective_jwks_url"}:
                calls.add((caller, "jwks_url"))
            elif setting in URL_SETTINGS:
                calls.add((caller, setting))
    # referral's token source posts to the token_url its credentials file names: the registry_url the
    # bootstrap was given (deploy/seed.py writes it).
    if "credentials_file" in (REPO / "services/referral/app.py").read_text():
        calls.add(("referral", "registry_url"))
    return {(caller, setting) for caller, setting in calls if caller != "registry" or setting != "jwks_url"}


CALLS = sorted(derived_calls())


def test_the_derivation_sees_the_calls_we_know() -> None:
    assert ("referral", "intake_url") in CALLS
    assert ("referral", "registry_url") in CALLS
    for service in ("intake", "referral", "audit"):
        assert (service, "jwks_url") in CALLS
    assert all(setting in ServiceSettings.model_fields or setting == "jwks_url" for _, setting in CALLS)


def _callee(url: str, hosts: dict[str, str]) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname in hosts, f"{url} names no RefNet service"
    return hosts[parts.hostname], parts.port or 80


def _value(env: dict[str, str], caller: str, setting: str) -> str | None:
    return env.get(f"REFNET_{caller.upper()}_{setting.upper()}") or env.get(f"REFNET_{setting.upper()}")


@pytest.mark.parametrize(("caller", "setting"), CALLS)
def test_compose_sets_each_call(caller: str, setting: str) -> None:
    compose = load_compose(COMPOSE_FILE)
    services: dict[str, Any] = compose["services"]
    url = _value(environment_of(services[caller]), caller, setting)
    assert url, f"docker-compose.yml leaves {caller}'s {setting} at its 127.0.0.1 default"
    callee, port = _callee(url, {name: name for name in SERVICE_PORTS})
    assert port == SERVICE_PORTS[callee], url
    shared_networks = set(services[caller]["networks"]) & set(services[callee]["networks"])
    assert shared_networks, f"{caller} and {callee} share no network"


@pytest.mark.parametrize(("caller", "setting"), CALLS)
def test_kubernetes_sets_and_allows_each_call(caller: str, setting: str) -> None:
    env = dict(k8s_by_kind("ConfigMap")["refnet-config"]["data"])
    container = k8s_by_kind("Deployment")[f"refnet-{caller}"]["spec"]["template"]["spec"]["containers"][0]
    env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    url = _value(env, caller, setting)
    assert url, f"deploy/k8s leaves {caller}'s {setting} at its 127.0.0.1 default"
    hosts = {f"refnet-{name}.{NS}.svc": name for name in SERVICE_PORTS}
    callee, port = _callee(url, hosts)
    assert port == SERVICE_PORTS[callee], url
    assert egress_allowed(POLICIES, NS, _pod(caller), NS, _pod(callee), port), f"{caller} -> {callee} egress"
    assert ingress_allowed(POLICIES, NS, _pod(callee), NS, _pod(caller), port), f"{caller} -> {callee} ingress"


def test_referral_mounts_its_client_credentials() -> None:
    compose = load_compose(COMPOSE_FILE)
    referral = compose["services"]["referral"]
    path = environment_of(referral)["REFNET_REFERRAL_CREDENTIALS_FILE"]
    assert path == f"/run/secrets/{next(s for s in referral['secrets'] if path.endswith(s))}"
    assert compose["services"]["platform-bootstrap"]["command"][:2] == ["bootstrap", "platform"]
    deployment = k8s_by_kind("Deployment")["refnet-referral"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in deployment["containers"][0]["env"]}
    mounted = env["REFNET_REFERRAL_CREDENTIALS_FILE"]
    mounts = {m["mountPath"]: m["name"] for m in deployment["containers"][0]["volumeMounts"]}
    volume = mounts[mounted.rsplit("/", 1)[0]]
    secret = next(v["secret"] for v in deployment["volumes"] if v["name"] == volume)
    assert secret["secretName"] in (K8S_DIR / "README.md").read_text()
    assert [i["path"] for i in secret["items"]] == [mounted.rsplit("/", 1)[1]]


def test_an_unallowed_call_is_seen() -> None:
    without = [p for p in POLICIES if p["metadata"]["name"] != "refnet-intake-from-referral"]
    assert not ingress_allowed(without, NS, _pod("intake"), NS, _pod("referral"), 8002)
