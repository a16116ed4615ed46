"""Where the audit service is, and the auditor's access token."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console

from shared.client_auth import TokenUnavailable, request_token

AUDIT_SCOPE = "audit:read"
DEFAULT_AUDIT_URL = "http://127.0.0.1:8004"
ASSERTION_LIFETIME_SECONDS = 120  # RFC 7523 assertions should be short-lived; the registry allows <= 5 min

console = Console()
T = TypeVar("T")


class AuditCliError(Exception):
    """Something the auditor must see, in words (no traceback)."""



# --- where things are -----------------------------------------------------------------------------------


def refnet_home() -> Path:
    """REFNET_HOME, else the repository's .refnet (where the launcher writes), else ~/.refnet."""
    if os.environ.get("REFNET_HOME"):
        return Path(os.environ["REFNET_HOME"])
    local = Path.cwd() / ".refnet"
    return local if local.is_dir() else Path.home() / ".refnet"


def audit_url(explicit: str | None) -> str:
    if explicit:
        return explicit.rstrip("/")
    if os.environ.get("REFNET_AUDIT_URL"):
        return os.environ["REFNET_AUDIT_URL"].rstrip("/")
    state = refnet_home() / "state.json"
    try:
        url = json.loads(state.read_text())["services"]["audit"]
        if isinstance(url, str) and url:
            return url.rstrip("/")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return DEFAULT_AUDIT_URL


# --- tokens ---------------------------------------------------------------------------------------------


def load_credentials(name: str) -> dict[str, Any]:
    path = refnet_home() / "credentials" / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise AuditCliError(f"no credentials named {name!r} at {path}") from exc
    except ValueError as exc:
        raise AuditCliError(f"{path} is not JSON") from exc
    missing = [k for k in ("client_id", "private_key_pem", "token_url") if not data.get(k)]
    if missing:
        raise AuditCliError(f"{path} lacks {', '.join(missing)}")
    return dict(data)


async def fetch_token(credentials: dict[str, Any], http: httpx.AsyncClient, scope: str = AUDIT_SCOPE) -> str:
    try:
        token, _ = await request_token(http, credentials, scope, assertion_lifetime=ASSERTION_LIFETIME_SECONDS,
                                       thumbprint_kid=False)
    except TokenUnavailable as exc:
        raise AuditCliError(str(exc)) from exc
    return token


async def resolve_token(token: str | None, as_name: str | None, http: httpx.AsyncClient) -> str:
    if token:
        return token
    if as_name:
        return await fetch_token(load_credentials(as_name), http)
    if os.environ.get("REFNET_TOKEN"):
        return os.environ["REFNET_TOKEN"]
    raise AuditCliError("no access token: pass --token, set REFNET_TOKEN, or use --as <credentials name>")
