"""People's access tokens in a running stack (issue 20), for the scenarios and the isolation and token suites.

A person's token comes from the registry itself: the person signs in as the console does, over HTTP (code + PKCE +
TOTP, tests/support/sign_in.py). The demo people `make run` seeds (`<agency>-<role>`, their secrets in
`.refnet/credentials/people/`) are used as they are; anyone else -- a person with two roles, a second person of a
role -- is invited by the platform's admin client (`POST /agencies/{id}/staff`) and enrols through the one-time
link's page (a password and a TOTP secret), once per stack.

``forge`` is for the token-attack suites only: a person's token with claims no registry would issue, signed with
the registry's own key from the stack's key file -- what only a holder of that key could make.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import pyotp
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.e2e.network import Network
from tests.support.issuer import ACR_MFA, CONSOLE_CLIENT, new_person, role_scopes
from tests.support.sign_in import mark_spent, sign_in

_TOTP_SECRET = re.compile(r'<code id="totp-secret">([^<]+)</code>')
_HIDDEN = re.compile(r'<input type="hidden" name="(?P<name>[a-z]+)" value="(?P<value>[^"]*)">')


@dataclass(frozen=True)
class Member:
    """A person of a demo agency who can sign in: their id (their tokens' ``sub``) and their credentials."""

    id: str
    agency: str  # the agency's short name
    login: str
    roles: tuple[str, ...]
    credentials: dict[str, Any]


class Staff:
    """Staff members of the demo agencies of ``net``, signed in at its registry."""

    # Shared by every Staff of the process, per registry: a person is enrolled once, and signs in again only when
    # their token is half spent (each sign-in takes a TOTP code, good once: a third within 30 s would wait).
    _members: ClassVar[dict[tuple[str, str, tuple[str, ...], str], Member]] = {}
    _tokens: ClassVar[dict[tuple[str, str], tuple[float, str]]] = {}

    def __init__(self, net: Network) -> None:
        self.net = net
        self.registry = net.url("registry")
        self._issuer: str | None = None

    # -- real people, real tokens ------------------------------------------------------------------------

    def person(self, agency: str, roles: tuple[str, ...] = ("caseworker",), name: str = "") -> Member:
        """A person of demo agency ``agency`` with exactly ``roles``: the demo person of that role when there is
        one (and no ``name``), else a person invited and enrolled now (one per ``name`` and stack)."""
        key = (self.registry, agency, tuple(roles), name)
        if key not in self._members:
            demo = self.net.home / "credentials" / "people" / f"{agency}-{roles[0].replace('_', '-')}.json"
            if len(roles) == 1 and not name and demo.exists():
                credentials = json.loads(demo.read_text())
            else:
                credentials = self._enrolled(agency, roles, name)
            self._members[key] = Member(credentials["person_id"], agency, credentials["login"], tuple(roles),
                                        credentials)
        return self._members[key]

    def token(self, agency: str, roles: tuple[str, ...] = ("caseworker",), name: str = "") -> str:
        """An access token the registry issued to ``person(agency, roles, name)``; signed in again once half its
        life has passed."""
        member = self.person(agency, roles, name)
        cached = self._tokens.get((self.registry, member.id))
        if cached and cached[0] > time.monotonic():
            return cached[1]
        tokens = sign_in(self.registry, member.credentials)
        self._tokens[(self.registry, member.id)] = (time.monotonic() + tokens.expires_in / 2, tokens.access_token)
        return tokens.access_token

    def headers(self, agency: str, roles: tuple[str, ...] = ("caseworker",), purpose: str = "case_management",
                name: str = "") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(agency, roles, name)}", "X-Purpose": purpose}

    def _enrolled(self, agency: str, roles: tuple[str, ...], name: str) -> dict[str, Any]:
        """Invite a person (the platform's admin client), then enrol them through the link's page."""
        login = f"e2e-{name or '-'.join(roles)}-{secrets.token_hex(4)}".replace("_", "-")[:64]
        invited = httpx.post(f"{self.registry}/agencies/{self.net.agency(agency)}/staff", timeout=30,
                             headers={"Authorization": f"Bearer {self.net.token('admin')}"},
                             json={"login": login, "roles": list(roles)})
        assert invited.status_code == 201, invited.text
        link = urlsplit(invited.json()["link"])
        password = secrets.token_urlsafe(18)
        with httpx.Client(base_url=self.registry, timeout=30) as http:
            page = http.get(f"{link.path}?{link.query}")
            assert page.status_code == 200, page.text
            found = _TOTP_SECRET.search(page.text)
            assert found is not None, "the enrolment page shows no TOTP secret"
            secret = html.unescape(found[1])
            hidden = {m["name"]: html.unescape(m["value"]) for m in _HIDDEN.finditer(page.text)}
            totp = pyotp.TOTP(secret)
            step = int(time.time() // totp.interval)
            done = http.post(link.path, data={**hidden, "password": password, "code": totp.at(step * totp.interval)})
            assert done.status_code == 200 and 'id="done"' in done.text, done.text
        mark_spent(secret, step)  # the enrolment took this step's code: the sign-in must use a later one
        return {"login": login, "agency": agency, "agency_id": self.net.agency(agency),
                "person_id": invited.json()["person"]["id"], "roles": list(roles), "password": password,
                "totp_secret": secret, **self._console()}

    def _console(self) -> dict[str, str]:
        """The console this stack registered as the sign-in client (as the demo people's files name it)."""
        for demo in sorted((self.net.home / "credentials" / "people").glob("*.json")):
            console = json.loads(demo.read_text()).get("console")
            if console:
                return {"console": str(console)}
        return {}

    # -- forgeries, for the token-attack suites ----------------------------------------------------------

    @property
    def issuer(self) -> str:
        if self._issuer is None:
            metadata = httpx.get(self.registry + "/.well-known/oauth-authorization-server", timeout=30)
            self._issuer = str(metadata.json()["issuer"])
        return self._issuer

    def _key(self) -> tuple[ECKey, str]:
        private = json.loads((self.net.home / "keys" / "registry-signing-key.jwks.json").read_text())["keys"][0]
        return ECKey.import_key(private), str(private["kid"])

    def claims(self, agency: str, roles: tuple[str, ...] = ("caseworker",), *, person: str | None = None,
               scope: str | None = None, **changes: Any) -> dict[str, Any]:
        """The claims of the token profile for a person of demo agency ``agency``; ``changes`` override (None
        removes) a claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": "refnet", "sub": person or new_person(), "client_id": CONSOLE_CLIENT,
            "agency": self.net.agency(agency), "roles": list(roles),
            "scope": role_scopes(roles) if scope is None else scope, "amr": ["pwd", "otp"], "acr": ACR_MFA,
            "auth_time": now, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], key: ECKey | None = None) -> str:
        """``claims`` signed with ``key``, by default the registry's own signing key (the stack's key file)."""
        own, kid = self._key()
        return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims, key or own, algorithms=["ES256"])

    def forge(self, agency: str, roles: tuple[str, ...] = ("caseworker",), **options: Any) -> str:
        """A token the registry would never issue, signed with its real key: ``claims(agency, roles, **options)``."""
        return self.sign(self.claims(agency, roles, **options))
