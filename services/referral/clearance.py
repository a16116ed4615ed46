"""Asking intake, at the moment of a referral, whether the case's consent permits it (docs/domain.md rule 1).

Intake owns consent and the case facts, so referral never decides consent from a stale copy: it asks
``POST {intake_url}/internal/clearance`` (scope ``cases:clearance``) every time. Intake unreachable or
failing is ``ClearanceUnavailable`` -- the API turns it into 503 with Retry-After, never into a guess.
An unknown case, or one the requesting agency does not own, is ``CaseNotFound`` (404: existence must not
leak).

The bearer token comes from a ``TokenSource`` (``shared.client_auth``): the registry's client
credentials grant when a credentials file is configured, else a static token from settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from services.referral.domain import CaseFacts
from shared.client_auth import StaticToken, TokenSource, TokenUnavailable

log = structlog.get_logger("refnet.referral.clearance")


@dataclass(frozen=True)
class ClearanceRequest:
    case_id: str
    requesting_agency: str
    to_agency: str
    pathway: str
    data_categories: list[str]
    purpose: str = "referral"


@dataclass(frozen=True)
class Clearance:
    permitted: bool
    reason: str | None  # consent-missing | recipient-suspended | case-erased | override | None
    consent_id: str | None
    consent_version: int | None
    facts: CaseFacts
    override_id: str | None = None  # a risk-to-life override (docs/domain.md rule 6) permitted it


class CaseNotFound(Exception):
    """Intake knows no such case, or not for this agency."""


class ClearanceUnavailable(Exception):
    """Intake could not answer: the referral must wait, not proceed on a guess."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ClearanceClient(Protocol):
    async def clear(self, request: ClearanceRequest) -> Clearance: ...


class _Facts(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # null: the age is not known. Presumed a child (docs/domain.md rule 4), never a reason to wait.
    is_minor: bool | None
    bia_completed: bool
    bid_completed: bool
    fear_of_return: bool
    status: str = "active"


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    permitted: bool
    reason: str | None = None
    consent_id: str | None = None
    consent_version: int | None = None
    override_id: str | None = None
    facts: _Facts


class HttpClearanceClient:
    """The intake HTTP contract. ``transport`` lets tests put a fake intake behind it."""

    def __init__(self, intake_url: str, token: str | TokenSource, *, timeout: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.tokens: TokenSource = StaticToken(token) if isinstance(token, str) else token
        self._client = httpx.AsyncClient(base_url=intake_url.rstrip("/"), timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()
        closer = getattr(self.tokens, "aclose", None)
        if closer is not None:
            await closer()

    async def clear(self, request: ClearanceRequest) -> Clearance:
        # intake names the requesting agency ``from_agency``: only the case's owner may refer it.
        body = {"case_id": request.case_id, "from_agency": request.requesting_agency,
                "to_agency": request.to_agency, "purpose": request.purpose,
                "data_categories": request.data_categories, "pathway": request.pathway}
        for attempt in (1, 2):
            try:
                token = await self.tokens.token()
            except TokenUnavailable as exc:
                log.warning("clearance_token_unavailable", error=str(exc))
                raise ClearanceUnavailable("no access token for intake") from exc
            try:
                response = await self._client.post("/internal/clearance", json=body,
                                                   headers={"Authorization": f"Bearer {token}"} if token else {})
            except httpx.HTTPError as exc:
                log.warning("clearance_unreachable", error=type(exc).__name__)
                raise ClearanceUnavailable("intake unreachable") from exc
            if response.status_code == 401 and attempt == 1:
                self.tokens.invalidate()  # expired or revoked: one fresh token, one more try
                continue
            break
        if response.status_code == 404:
            raise CaseNotFound(request.case_id)
        if response.status_code != 200:
            # 5xx, but also 401/403 (our token) and 4xx (contract drift): none is an answer about consent.
            log.warning("clearance_failed", status=response.status_code)
            retry = response.headers.get("retry-after", "")
            raise ClearanceUnavailable(f"intake answered {response.status_code}",
                                       int(retry) if retry.isdigit() else 5)
        try:
            answer = _Answer.model_validate_json(response.content)
        except ValidationError as exc:
            log.warning("clearance_unreadable")
            raise ClearanceUnavailable("intake's answer is not readable") from exc
        facts = answer.facts
        return Clearance(
            permitted=answer.permitted, reason=answer.reason, consent_id=answer.consent_id,
            consent_version=answer.consent_version, override_id=answer.override_id,
            facts=CaseFacts(is_minor=facts.is_minor is not False, bia_completed=facts.bia_completed,
                            bid_completed=facts.bid_completed, fear_of_return=facts.fear_of_return,
                            status=facts.status),
        )
