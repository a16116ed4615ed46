"""A local OAuth token issuer for tests of every service.

It holds signing keys, publishes their JWKS over real HTTP on 127.0.0.1 (so ``TokenValidator`` is tested
with its real fetching code), and mints RFC 9068 access tokens -- good ones, and the hostile kinds a
resource server must refuse. Usage::

    issuer = local_issuer_fixture()          # in a test module: a module-scoped pytest fixture named "issuer"

    async def test_x(issuer: LocalIssuer) -> None:
        app.state.token_validator = issuer.validator()
        headers = issuer.auth_headers("client-1", "agency-1", "cases:read")      # an agency's system
        headers = issuer.person_headers(agency="agency-1", roles=("supervisor",))  # a person (issue 20)

or, outside pytest fixtures, ``with LocalIssuer() as issuer: ...``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, KeyParameters, OctKey, OKPKey, RSAKey

from shared.auth import TokenValidator

JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"


#: The first-party client people sign in through (the console), as a person's token names it in client_id.
CONSOLE_CLIENT = "refnet-console"
ACR_MFA = "urn:refnet:acr:mfa"
#: What each role lets a person's token hold (issue 20's profile; the registry derives the same).
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "caseworker": ("registry:read", "cases:read", "cases:write", "consent:write", "referrals:read",
                   "referrals:write"),
    "supervisor": ("registry:read", "cases:read", "cases:write", "consent:write", "referrals:read",
                   "referrals:write", "overrides:approve"),
    "agency_admin": ("registry:read", "registry:write", "staff:admin", "webhooks:admin"),
    "auditor": ("registry:read", "audit:read"),
}


def new_person() -> str:
    """A person id in the form the registry mints (``new_id("person")``)."""
    return f"person-{secrets.token_hex(16)}"


def role_scopes(roles: tuple[str, ...] | list[str]) -> str:
    return " ".join(sorted({scope for role in roles for scope in ROLE_SCOPES.get(role, ())}))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def generate_signing_key(alg: str = "ES256", kid: str | None = None) -> Key:
    """A fresh private key fit for ``alg``, carrying ``kid``, ``alg`` and ``use: sig`` like a real JWKS."""
    params: KeyParameters = {"kid": kid or secrets.token_hex(8), "use": "sig", "alg": alg}
    curves = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
    if alg in curves:
        return ECKey.generate_key(curves[alg], params)
    if alg.startswith(("RS", "PS")):
        return RSAKey.generate_key(2048, params)
    if alg in ("EdDSA", "Ed25519"):
        return OKPKey.generate_key("Ed25519", params)
    raise ValueError(f"no key type for algorithm {alg!r}")


class LocalIssuer:
    """Signing keys, a JWKS endpoint over real HTTP, and a token minter.

    ``jwks_requests`` counts GETs of the JWKS (to check refetch rate limiting); set ``fail_status`` to make
    the JWKS endpoint answer with that HTTP status, or ``stop()`` the server to make it unreachable.
    """

    def __init__(self, alg: str = "ES256", *, audience: str = "refnet") -> None:
        self.audience = audience
        self._keys: list[Key] = [generate_signing_key(alg)]
        self._signing_kid: str = self._kid(self._keys[0])
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self.fail_status: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> LocalIssuer:
        if self._server is not None:
            return self
        # Reuse the port on restart, so the issuer URL (baked into tokens and validators) stays the same.
        server = ThreadingHTTPServer(("127.0.0.1", self._port or 0), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._port = server.server_address[1]
        # A short poll interval keeps stop() (and so every test using an issuer) fast.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-issuer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def issuer(self) -> str:
        if self._port is None:
            raise RuntimeError("LocalIssuer is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def jwks_url(self) -> str:
        return self.issuer + JWKS_PATH

    @property
    def jwks_requests(self) -> int:
        with self._lock:
            return self._requests[JWKS_PATH]

    # -- keys --------------------------------------------------------------------------------------------

    @staticmethod
    def _kid(key: Key) -> str:
        assert key.kid is not None
        return key.kid

    @property
    def signing_key(self) -> Key:
        return self.key(self._signing_kid)

    @property
    def current_kid(self) -> str:
        return self._signing_kid

    @property
    def kids(self) -> list[str]:
        with self._lock:
            return [self._kid(k) for k in self._keys]

    def key(self, kid: str) -> Key:
        with self._lock:
            for k in self._keys:
                if k.kid == kid:
                    return k
        raise KeyError(kid)

    def add_key(self, alg: str = "ES256", *, kid: str | None = None) -> Key:
        """Publish another key (not used for signing unless passed as ``key=`` or made current)."""
        key = generate_signing_key(alg, kid)
        with self._lock:
            self._keys.append(key)
        return key

    def rotate(self, alg: str = "ES256", *, keep_previous: bool = True) -> str:
        """Publish a new key and sign with it from now on; returns its kid."""
        key = self.add_key(alg)
        kid = self._kid(key)
        with self._lock:
            if not keep_previous:
                self._keys = [key]
            self._signing_kid = kid
        return kid

    def remove_key(self, kid: str) -> None:
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [dict(k.as_dict(private=False)) for k in self._keys]}

    def public_pem(self, kid: str | None = None) -> bytes:
        key = self.key(kid or self._signing_kid)
        if isinstance(key, OctKey):
            raise TypeError("an oct key has no public PEM")
        return key.as_pem(private=False)

    # -- tokens ------------------------------------------------------------------------------------------

    def claims(
        self,
        sub: str = "client-1",
        agency: str = "agency-1",
        scope: str = "",
        *,
        aud: str | list[str] | None = None,
        exp_in: int = 300,
        nbf: int | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """RFC 9068 claims. ``nbf`` is seconds from now (negative: in the past). In ``extra_claims`` a value
        of ``None`` removes that claim (to test missing claims), anything else adds or overrides it."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "client_id": sub,
            "aud": self.audience if aud is None else aud,
            "agency": agency,
            "scope": scope,
            "iat": now,
            "exp": now + exp_in,
            "jti": secrets.token_hex(16),
        }
        if nbf is not None:
            claims["nbf"] = now + nbf
        for name, value in (extra_claims or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def mint(
        self,
        sub: str = "client-1",
        agency: str = "agency-1",
        scope: str = "",
        *,
        aud: str | list[str] | None = None,
        exp_in: int = 300,
        nbf: int | None = None,
        alg: str = "ES256",
        typ: str | None = "at+jwt",
        kid: str | None = None,
        extra_claims: dict[str, Any] | None = None,
        key: Key | None = None,
    ) -> str:
        """A signed access token. By default signed with the current key if it fits ``alg``, else with a
        published key that does. ``key`` signs with any key (also an unpublished one); ``kid`` overrides the
        header's kid (so a foreign key can claim a published kid); ``typ=None`` leaves ``typ`` out."""
        signer = key or self._key_for(alg)
        header: dict[str, Any] = {"alg": alg, "kid": kid or signer.kid}
        if typ is not None:
            header["typ"] = typ
        claims = self.claims(sub, agency, scope, aud=aud, exp_in=exp_in, nbf=nbf, extra_claims=extra_claims)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)  # joserfc's EdDSA deprecation notice
            return jwt.encode(header, claims, signer, algorithms=[alg], default_type=None)

    def _key_for(self, alg: str) -> Key:
        current = self.signing_key
        if current.alg == alg:
            return current
        with self._lock:
            for k in self._keys:
                if k.alg == alg:
                    return k
        raise ValueError(f"the issuer publishes no {alg} key; add_key({alg!r}) first")

    # people's tokens (issue 20's profile: sub is the person, client_id the first-party client)

    def mint_person(
        self,
        person: str | None = None,
        agency: str = "agency-1",
        roles: tuple[str, ...] = ("caseworker",),
        scope: str | None = None,
        *,
        client_id: str = CONSOLE_CLIENT,
        amr: tuple[str, ...] = ("pwd", "otp"),
        acr: str | None = ACR_MFA,
        exp_in: int = 300,
        extra_claims: dict[str, Any] | None = None,
        **mint_options: Any,
    ) -> str:
        """A person's access token as the registry issues it: ``sub`` the person (a fresh ``person-`` id unless
        named), ``roles``, and by default the scopes those roles give (``scope`` overrides them)."""
        claims: dict[str, Any] = {"client_id": client_id, "roles": list(roles), "amr": list(amr),
                                  "acr": acr, "auth_time": int(time.time())}
        claims.update(extra_claims or {})
        return self.mint(person or new_person(), agency, role_scopes(roles) if scope is None else scope,
                         exp_in=exp_in, extra_claims=claims, **mint_options)

    def person_headers(self, person: str | None = None, agency: str = "agency-1",
                       roles: tuple[str, ...] = ("caseworker",), scope: str | None = None, *,
                       acting_user: str | None = None, **options: Any) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.mint_person(person, agency, roles, scope, **options)}"}
        if acting_user is not None:
            headers["X-Acting-User"] = acting_user
        return headers

    # hostile tokens

    def mint_alg_none(self, sub: str = "client-1", agency: str = "agency-1", scope: str = "",
                      **claim_options: Any) -> str:
        """An unsigned token (``alg: none``) naming the current kid."""
        header = {"alg": "none", "typ": "at+jwt", "kid": self._signing_kid}
        claims = self.claims(sub, agency, scope, **claim_options)
        return f"{_b64url_json(header)}.{_b64url_json(claims)}."

    def mint_hs256_with_public_key(self, sub: str = "client-1", agency: str = "agency-1", scope: str = "",
                                   **claim_options: Any) -> str:
        """The algorithm-confusion attack: HS256 keyed with the issuer's public key PEM (which anyone can
        fetch). Built by hand because joserfc rightly refuses to use a PEM as an HMAC secret."""
        header = {"alg": "HS256", "typ": "at+jwt", "kid": self._signing_kid}
        claims = self.claims(sub, agency, scope, **claim_options)
        signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
        mac = hmac.new(self.public_pem(), signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(mac)}"

    def mint_foreign(self, sub: str = "client-1", agency: str = "agency-1", scope: str = "", *,
                     alg: str = "ES256", **mint_options: Any) -> str:
        """Signed by a key the issuer never published, but claiming the issuer's current kid."""
        foreign = generate_signing_key(alg)
        return self.mint(sub, agency, scope, alg=alg, key=foreign, kid=self._signing_kid, **mint_options)

    # -- conveniences for service tests ------------------------------------------------------------------

    def validator(self, **options: Any) -> TokenValidator:
        """A ``TokenValidator`` trusting this issuer (``audience`` defaults to the issuer's audience)."""
        audience = options.pop("audience", self.audience)
        return TokenValidator(self.issuer, audience, self.jwks_url, **options)

    def auth_headers(self, sub: str = "client-1", agency: str = "agency-1", scope: str = "", *,
                     acting_user: str | None = None, **mint_options: Any) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.mint(sub, agency, scope, **mint_options)}"}
        if acting_user is not None:
            headers["X-Acting-User"] = acting_user
        return headers

    # -- HTTP --------------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with issuer._lock:
                    issuer._requests[path] += 1
                if issuer.fail_status is not None:
                    self._send(issuer.fail_status, {"error": "unavailable"})
                elif path == JWKS_PATH:
                    self._send(200, issuer.jwks())
                elif path == METADATA_PATH:
                    self._send(200, {"issuer": issuer.issuer, "jwks_uri": issuer.jwks_url})
                else:
                    self._send(404, {"error": "not_found"})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


def local_issuer_fixture(*, scope: Literal["session", "package", "module", "class", "function"] = "module",
                         alg: str = "ES256", audience: str = "refnet") -> Any:
    """A pytest fixture yielding a started ``LocalIssuer``; assign it to a module attribute to use it:
    ``issuer = local_issuer_fixture()`` makes a fixture named ``issuer``."""

    @pytest.fixture(scope=scope)
    def _local_issuer() -> Iterator[LocalIssuer]:
        with LocalIssuer(alg, audience=audience) as issuer:
            yield issuer

    return _local_issuer
