"""Calls to the four APIs with the signed-in person's own access token: every read and every act is the
person's in the audit log. An answer is kept as status + JSON; a refusal becomes ``Refused`` for the page to
word (``domain.refusal_message``, ``domain.field_errors``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

log = structlog.get_logger("refnet.console")


@dataclass
class Refused(Exception):
    """An API said no (4xx), or could not answer (5xx, unreachable: status 503)."""

    status: int
    problem_type: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"refused with {self.status} ({self.problem_type})"


class Api:
    """One of the four APIs, called as the person."""

    def __init__(self, name: str, base_url: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.name = name
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                        follow_redirects=False)

    async def call(self, token: str, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json: Any = None, headers: dict[str, str] | None = None) -> Any:
        sent = {"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})}
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            answer = await self.client.request(method, path, params=clean or None, json=json, headers=sent)
        except httpx.HTTPError as exc:
            log.warning("console_api_unreachable", api=self.name, error=type(exc).__name__)
            raise Refused(503, "unreachable") from exc
        if answer.status_code >= 400:
            body: dict[str, Any] = {}
            try:
                parsed = answer.json()
                body = parsed if isinstance(parsed, dict) else {}
            except ValueError:
                pass
            errors = body.get("errors")
            # Logged by status and type only: a problem's detail may echo what the person typed.
            log.info("console_api_refused", api=self.name, status=answer.status_code, type=body.get("type"))
            raise Refused(answer.status_code, body.get("type") if isinstance(body.get("type"), str) else None,
                          errors if isinstance(errors, list) else [])
        if answer.status_code == 204 or not answer.content:
            return None
        return answer.json()

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass
class Apis:
    registry: Api
    intake: Api
    referral: Api
    audit: Api

    async def aclose(self) -> None:
        for api in (self.registry, self.intake, self.referral, self.audit):
            await api.aclose()
