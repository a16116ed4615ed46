"""The auditor CLI's token request (RFC 7523 private_key_jwt) and the launcher's key bootstrap."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from deploy.commands.audit import AuditCliError, fetch_token, resolve_token
from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.bootstrap import audit as bootstrap
from services.audit.signing import load_key_file
from shared.client_auth import ASSERTION_TYPE

TOKEN_URL = "http://registry.test/oauth/token"


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc's notice; the name is still what is sent
@pytest.mark.parametrize(("key", "alg"), [(ECKey.generate_key("P-256"), "ES256"),
                                          (OKPKey.generate_key("Ed25519"), "EdDSA")])
async def test_as_name_gets_a_token_with_a_private_key_jwt(
        key: ECKey | OKPKey, alg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "oversight.json").write_text(json.dumps({
        "name": "oversight", "agency_id": "ag-1", "client_id": "client-ov", "token_url": TOKEN_URL,
        "private_key_pem": key.as_pem(private=True).decode(), "scopes": ["audit:read"]}))
    monkeypatch.setenv("REFNET_HOME", str(tmp_path))
    seen: list[dict[str, list[str]]] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        seen.append(form)
        assertion = form["client_assertion"][0]
        claims = jwt.decode(assertion, key, algorithms=[alg]).claims
        now = time.time()
        assert claims["iss"] == claims["sub"] == "client-ov"
        assert claims["aud"] == TOKEN_URL
        assert now - 5 <= claims["exp"] <= now + 300 and claims["jti"]
        return httpx.Response(200, json={"access_token": "tok-1", "token_type": "Bearer"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint)) as http:
        assert await resolve_token(None, "oversight", http) == "tok-1"
        assert await resolve_token(None, "oversight", http) == "tok-1"
        assert await resolve_token("explicit", "oversight", http) == "explicit"
    assert seen[0]["grant_type"] == ["client_credentials"] and seen[0]["scope"] == ["audit:read"]
    assert seen[0]["client_assertion_type"] == [ASSERTION_TYPE]
    assert seen[0]["client_assertion"] != seen[1]["client_assertion"], "a jti was reused"


async def test_token_problems_are_reported_in_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFNET_HOME", str(tmp_path))
    monkeypatch.delenv("REFNET_TOKEN", raising=False)
    async with httpx.AsyncClient() as http:
        with pytest.raises(AuditCliError, match="no access token"):
            await resolve_token(None, None, http)
        with pytest.raises(AuditCliError, match="no credentials named"):
            await resolve_token(None, "nobody", http)
    key = ECKey.generate_key("P-256")
    refusing = httpx.MockTransport(lambda _: httpx.Response(401, json={"error": "invalid_client",
                                                                       "error_description": "unknown client"}))
    async with httpx.AsyncClient(transport=refusing) as http:
        with pytest.raises(AuditCliError, match=r"refused \(401\) unknown client"):
            await fetch_token({"client_id": "c", "token_url": TOKEN_URL,
                               "private_key_pem": key.as_pem(private=True).decode()}, http)


def test_bootstrap_makes_one_key_and_keeps_it(tmp_path: Path) -> None:
    ctx = BootstrapContext(service="audit", home=tmp_path, database_url="postgresql+asyncpg://x/y",
                           service_urls={})
    bootstrap.prepare(ctx)
    path = Path(ctx.env["REFNET_AUDIT_CHECKPOINT_KEY_FILE"])
    assert path.parent == tmp_path / "keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = load_key_file(path).private_bytes_raw()
    again = BootstrapContext(service="audit", home=tmp_path, database_url="", service_urls={})
    bootstrap.prepare(again)
    assert again.env == ctx.env and load_key_file(path).private_bytes_raw() == first
