"""A small OpenID Connect provider for tests: an agency's own identity provider (Keycloak, Entra ID, ...) that
the registry brokers (issue #20 part 5). Real HTTP on 127.0.0.1, so the registry's outbound client, discovery
and JWKS fetching are the real ones.

It serves discovery, its JWKS, an authorization endpoint that approves the configured ``user`` at once
(redirecting back with a code), and a token endpoint that checks the client (client_secret_basic or
private_key_jwt), the code, the redirect URI and the PKCE verifier, and answers an ID token. Hostile answers
for the refusal tests: ``id_token_claims`` overrides claims (None removes one), ``signing`` is ``own``,
``foreign`` (a key it never published, under its own kid), ``none``, ``hs256`` (keyed with the client secret) or
``garbage`` (not a JWT at all),
and ``issue_as`` makes it sign and name itself as another provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import Key, KeySet

from tests.support.issuer import generate_signing_key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class UpstreamProvider:
    def __init__(self, *, client_id: str = "refnet", client_secret: str | None = None, alg: str = "RS256") -> None:
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.alg = alg
        self.key: Key = generate_signing_key(alg)
        self.redirect_uris: list[str] = []
        #: The person it signs in: the ID token's claims besides iss/aud/exp/iat/nonce.
        self.user: dict[str, Any] = {}
        self.id_token_claims: dict[str, Any] = {}
        self.signing = "own"
        self.header_typ = "JWT"
        self.issue_as: UpstreamProvider | None = None
        #: For private_key_jwt: the JWKS the client's assertions are verified with (the registry's).
        self.client_jwks: dict[str, Any] | None = None
        self.token_requests: list[dict[str, str]] = []
        self._codes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> UpstreamProvider:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> UpstreamProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to honest answers (between tests)."""
        self.id_token_claims, self.signing, self.issue_as, self.header_typ = {}, "own", None, "JWT"

    @property
    def issuer(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/realms/agency"

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": self.issuer + "/authorize",
                "token_endpoint": self.token_endpoint, "jwks_uri": self.issuer + "/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [self.alg], "code_challenge_methods_supported": ["S256"]}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self.key.as_dict(private=False))]}

    # -- the ID token --

    def id_token(self, nonce: str | None) -> str:
        source = self.issue_as or self
        now = int(time.time())
        claims: dict[str, Any] = {"iss": source.issuer, "aud": self.client_id, "iat": now, "exp": now + 300,
                                  "auth_time": now, **self.user}
        if nonce is not None:
            claims["nonce"] = nonce
        for name, value in self.id_token_claims.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        header: dict[str, Any] = {"alg": source.alg, "kid": source.key.kid, "typ": self.header_typ}
        if self.signing == "garbage":
            return "not.a.jwt\u00e9"
        if self.signing == "none":
            unsigned = {"alg": "none", "typ": "JWT"}
            return f"{_b64url(json.dumps(unsigned).encode())}.{_b64url(json.dumps(claims).encode())}."
        if self.signing == "hs256":
            signing_input = (f"{_b64url(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': source.key.kid}).encode())}."
                             f"{_b64url(json.dumps(claims).encode())}")
            mac = hmac.new(self.client_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{_b64url(mac)}"
        signer = generate_signing_key(source.alg) if self.signing == "foreign" else source.key
        return jwt.encode(header, claims, signer, algorithms=[source.alg])

    # -- the endpoints --

    def _authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or redirect_uri not in self.redirect_uris:
            return 400, {}, {"error": "invalid_request"}
        if (query.get("response_type") != "code" or query.get("code_challenge_method") != "S256"
                or not query.get("code_challenge") or "openid" not in query.get("scope", "").split()):
            return 302, {"Location": redirect_uri + "?" + urlencode({"error": "invalid_request",
                                                                      "state": query.get("state", "")})}, None
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = {"redirect_uri": redirect_uri, "nonce": query.get("nonce"),
                                 "challenge": query["code_challenge"]}
        return 302, {"Location": redirect_uri + "?" + urlencode({"code": code, "state": query.get("state", "")})}, None

    def _client_ok(self, headers: Any, form: dict[str, str]) -> bool:
        if form.get("client_assertion"):
            if self.client_jwks is None:
                return False
            try:
                token = jwt.decode(form["client_assertion"], KeySet.import_key_set(self.client_jwks),
                                   algorithms=["ES256"])
            except Exception:
                return False
            claims = token.claims
            return (claims.get("iss") == claims.get("sub") == self.client_id and claims.get("aud") in
                    (self.token_endpoint, [self.token_endpoint]) and claims.get("exp", 0) > time.time())
        basic = headers.get("Authorization", "")
        if not basic.startswith("Basic "):
            return False
        client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        return client_id == self.client_id and hmac.compare_digest(secret, self.client_secret)

    def _token(self, headers: Any, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests.append({k: v for k, v in form.items() if k != "client_assertion"})
            grant = self._codes.pop(form.get("code", ""), None)
        if not self._client_ok(headers, form):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code" or grant is None:
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
        if form.get("redirect_uri") != grant["redirect_uri"] or challenge != grant["challenge"]:
            return 400, {"error": "invalid_grant"}
        return 200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                     "id_token": self.id_token(grant["nonce"])}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                base = urlsplit(provider.issuer).path
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == base + "/.well-known/openid-configuration":
                    self._send(200, provider.discovery())
                elif parts.path == base + "/jwks":
                    self._send(200, provider.jwks())
                elif parts.path == base + "/authorize":
                    status, headers, body = provider._authorize(query)
                    self._send(status, body, headers)
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if urlsplit(self.path).path == urlsplit(provider.token_endpoint).path:
                    self._send(*provider._token(self.headers, form))
                else:
                    self._send(404, {"error": "not_found"})

            def _send(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
