"""The stack the hostile-input, isolation and token suites run against, and what they read from its OpenAPI documents.

It is the stack `make run` starts (tests/e2e/network.py: webhooks may point at loopback there), with two settings
changed so that the suites stay fast: the pull feed's long-poll is capped at one second (fuzzing `GET /events?wait=`
would otherwise wait 30 s a call), and access tokens live 60 s, the shortest the registry allows (so `make
reliability` can wait one out).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from joserfc.jwk import ECKey

from shared.client_auth import ASSERTION_TYPE, client_assertion
from shared.settings import SERVICE_NAMES
from tests.e2e.network import Network, running_stack
from tests.e2e.staff import Staff
from tests.support.issuer import role_scopes

RELIABILITY_ENV = {
    "REFNET_REFERRAL_FEED_MAX_WAIT_SECONDS": "1",
    "REFNET_REGISTRY_ACCESS_TOKEN_LIFETIME_SECONDS": "60",
}
TOKEN_LIFETIME_SECONDS = 60
METHODS = ("get", "put", "post", "delete", "patch")


@contextmanager
def reliability_stack(home: Path, extra_env: dict[str, str] | None = None) -> Iterator[Network]:
    """A fresh stack; or, when debugging one suite, REFNET_RELIABILITY_ATTACH=<home of a running `refnet up`
    started with RELIABILITY_ENV> to use that one."""
    attach = os.environ.get("REFNET_RELIABILITY_ATTACH")
    if attach:
        yield attached_network(Path(attach))
        return
    with running_stack(home, RELIABILITY_ENV | (extra_env or {})) as net:
        yield net


def attached_network(home: Path) -> Network:
    state = json.loads((home / "state.json").read_text())
    env = {**os.environ, "REFNET_HOME": str(home),
           "REFNET_BROKER_PORT": state["broker"].rsplit(":", 1)[1],
           **{f"REFNET_{name.upper()}_PORT": url.rsplit(":", 1)[1] for name, url in state["services"].items()}}
    return Network(home, env)


@dataclass(frozen=True)
class Operation:
    """One operation of one service's OpenAPI document."""

    service: str
    method: str
    path: str
    scopes: tuple[str, ...] | None  # None: not secured
    path_params: tuple[str, ...]
    body_media_type: str | None
    #: The security requirements, each enough on its own (OpenAPI: any one of them); usually one.
    alternatives: tuple[tuple[str, ...], ...] = ()
    required_query: tuple[str, ...] = ()
    #: Every query parameter it declares (the services refuse any other).
    query: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.service} {self.method.upper()} {self.path}"

    def url(self, net: Network, **ids: str) -> str:
        return net.url(self.service) + self.path.format(**ids)


def openapi_document(net: Network, service: str) -> dict[str, Any]:
    answer = httpx.get(net.url(service) + "/openapi.json", timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def operations(net: Network, services: tuple[str, ...] = SERVICE_NAMES) -> list[Operation]:
    """Every operation the services declare, with the scopes its security requirement names."""
    found: list[Operation] = []
    for service in services:
        document = openapi_document(net, service)
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if method not in METHODS:
                    continue
                security = operation.get("security")
                scopes = tuple(sorted({s for requirement in security for ss in requirement.values() for s in ss})) \
                    if security else None
                params = tuple(p["name"] for p in operation.get("parameters", []) if p["in"] == "path")
                query = tuple(p["name"] for p in operation.get("parameters", [])
                              if p["in"] == "query" and p.get("required"))
                declared = tuple(p["name"] for p in operation.get("parameters", []) if p["in"] == "query")
                body = operation.get("requestBody", {}).get("content", {})
                alternatives = tuple(tuple(sorted(s for ss in requirement.values() for s in ss))
                                     for requirement in security or [])
                found.append(Operation(service, method, path, scopes, params, next(iter(body), None),
                                       alternatives, query, declared))
    return found


def service_pids(net: Network) -> dict[str, int]:
    state = json.loads((net.home / "state.json").read_text())
    return {name: int(state["pids"][name]) for name in SERVICE_NAMES}


def dead_services(pids: dict[str, int]) -> list[str]:
    """The services whose process is no longer the one that started (crashed, or restarted by someone)."""
    return [name for name, pid in pids.items()
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE]


def request_token(net: Network, client_id: str, private_pem: str,
                  scopes: list[str] | tuple[str, ...]) -> httpx.Response:
    """The client credentials grant (RFC 7523 assertion) for exactly ``scopes``; the answer as it comes."""
    token_url = net.url("registry") + "/oauth/token"
    return httpx.post(token_url, timeout=30, data={
        "grant_type": "client_credentials", "scope": " ".join(scopes),
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(client_id, token_url, private_pem)})


def token_with(net: Network, name: str, scopes: list[str] | tuple[str, ...]) -> str:
    """A token of demo agency ``name`` holding only ``scopes`` (a client may ask for less than it holds)."""
    credentials = net.credentials(name)
    answer = request_token(net, credentials["client_id"], credentials["private_key_pem"], scopes)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


@dataclass(frozen=True)
class NewAgency:
    agency_id: str
    client_id: str
    private_pem: str


def register_agency(net: Network, name: str, scopes: list[str]) -> NewAgency:
    """An agency registered by the operator (admin) with a key pair made here, as `refnet agency add` does."""
    key = ECKey.generate_key("P-256")
    public = key.as_dict(private=False) | {"kid": key.thumbprint(), "use": "sig", "alg": "ES256"}
    created = httpx.post(net.url("registry") + "/agencies", headers=net.headers("admin"), timeout=30, json={
        "name": name, "kind": "ngo", "country": "IT", "jwks": {"keys": [public]}, "scopes": scopes})
    assert created.status_code == 201, created.text
    pem = key.as_pem(private=True).decode()
    return NewAgency(created.json()["id"], created.json()["client_id"], pem)


#: Secured operations that only a signed-in person's live token may call, with why. They declare no scope: what they
#: need is a person, not a permission. The suites call them with a token from a real sign-in (tests/e2e/staff.py).
PERSON_ONLY: dict[tuple[str, str, str], str] = {
    ("registry", method, "/oauth/userinfo"): "OpenID Connect userinfo (OIDC Core 5.3) tells a signed-in person who "
    "they are; a system's token names no person (401 invalid_token), and what a person's token may do is its "
    "roles' scopes, not one of userinfo's own" for method in ("GET", "POST")}


#: The people the suites call as, between them holding every scope only people hold. An agency admin signs in without
#: a second factor, which tests/e2e/staff.py does not do: theirs is a person who is also a caseworker.
PERSON_ROLES: tuple[tuple[str, ...], ...] = (("supervisor",), ("agency_admin", "caseworker"))


def person_token(net: Network, agency: str, scopes: tuple[str, ...]) -> str | None:
    """A token of a person of demo agency ``agency`` whose roles give every one of ``scopes`` -- for the operations
    only people may call (``overrides:approve`` is a supervisor's, ``staff:admin`` an agency admin's; no system token
    holds them) -- from a real sign-in (tests/e2e/staff.py); None when no such person is at hand."""
    for roles in PERSON_ROLES:
        if set(scopes) <= set(role_scopes(roles).split()):
            return Staff(net).token(agency, roles)
    return None
