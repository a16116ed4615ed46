"""``AsyncRefNet`` and ``RefNet``: one agency's calls to RefNet, asynchronous and synchronous.

Both send the requests of ``calls`` with a token authlib's OAuth 2.0 client gets and reuses until shortly
before it expires; an answer RefNet refuses raises ``RefNetError``. ``RefNet`` is written out of
``AsyncRefNet`` (the same methods without ``async``/``await``); a test keeps the two alike.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from refnet_client import calls
from refnet_client.auth import Credentials, Endpoints, oauth_options, refuse_unless_issued
from refnet_client.calls import Call
from refnet_client.errors import RefNetError
from refnet_client.models import (
    AgencyIndicators,
    AuditEntry,
    Case,
    CaseAccess,
    CaseEntries,
    Checkpoint,
    Consent,
    ConsistencyProof,
    DataCategory,
    Delivery,
    FeedEvent,
    InclusionProof,
    LogKey,
    Page,
    Purpose,
    Referral,
    Service,
    Subscription,
)

with warnings.catch_warnings():
    # authlib 1.9 prefers the httpx2 fork and says so on import when it falls back to httpx, which RefNet uses.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client

T = TypeVar("T")
DEFAULT_TIMEOUT_SECONDS = 15.0


def _credentials(credentials: Credentials | str | Path) -> Credentials:
    return credentials if isinstance(credentials, Credentials) else Credentials.load(credentials)


def _endpoints(endpoints: Endpoints | None, stack_state: str | Path | None) -> Endpoints:
    if endpoints is not None:
        return endpoints
    return Endpoints.from_state(stack_state) if stack_state else Endpoints()


class _Base:
    def __init__(self, credentials: Credentials, endpoints: Endpoints, acting_user: str | None) -> None:
        self.credentials = credentials
        self.endpoints = endpoints
        #: Who acts, as RefNet's history and audit log show it (``X-Acting-User``); None: the client itself.
        self.acting_user = acting_user

    @property
    def agency_id(self) -> str | None:
        return self.credentials.agency_id

    def _request(self, call: Call[Any]) -> dict[str, Any]:
        headers = ({"X-Acting-User": self.acting_user} if self.acting_user else {}) | call.headers
        return {"method": call.method, "url": self.endpoints.url(call.service) + call.path,
                "params": call.params or None, "json": call.json, "headers": headers,
                "withhold_token": not call.authenticated}

    @staticmethod
    def _answer(call: Call[T], response: httpx.Response) -> T:
        if not response.is_success:
            raise RefNetError.from_response(response)
        return call.parse(response.json() if response.content else None)


class AsyncRefNet(_Base):
    """One agency's client, for asyncio programs. ``async with AsyncRefNet.from_credentials(path) as refnet:``."""

    def __init__(self, credentials: Credentials, endpoints: Endpoints | None = None, *, scope: str | None = None,
                 acting_user: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(credentials, endpoints or Endpoints(), acting_user)
        self.oauth = AsyncOAuth2Client(**oauth_options(credentials, scope), timeout=timeout, transport=transport)
        self.oauth.register_compliance_hook("access_token_response", refuse_unless_issued)
        self._first_token = asyncio.Lock()  # concurrent first calls share one token request

    @classmethod
    def from_credentials(cls, credentials: Credentials | str | Path, endpoints: Endpoints | None = None, *,
                         stack_state: str | Path | None = None, **options: Any) -> AsyncRefNet:
        """From a credentials file as ``refnet`` writes them; the services' URLs from ``endpoints``, else a
        stack's state file (``.refnet/state.json``), else the local defaults."""
        return cls(_credentials(credentials), _endpoints(endpoints, stack_state), **options)

    async def __aenter__(self) -> AsyncRefNet:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.oauth.aclose()

    async def token(self) -> str:
        """The access token the next call sends: asked for now if there is none or it is about to expire."""
        if not self.oauth.token:
            async with self._first_token:
                if not self.oauth.token:
                    await self.oauth.fetch_token()
        else:
            await self.oauth.ensure_active_token(self.oauth.token)
        return str(self.oauth.token["access_token"])

    def forget_token(self) -> None:
        """Ask for a new token on the next call (after the agency's key was rotated, say)."""
        self.oauth.token = None

    async def send(self, call: Call[T]) -> T:
        """Send one request of ``calls``; a 401 (token revoked, keys rotated) gets one fresh token and one retry."""
        for attempt in (1, 2):
            if call.authenticated:
                await self.token()
            response = await self.oauth.request(**self._request(call))
            if response.status_code == 401 and call.authenticated and attempt == 1:
                self.forget_token()
                continue
            break
        return self._answer(call, response)

    # --- cases and consent (intake) -----------------------------------------------------------------------

    async def create_case(self, person: dict[str, Any], screening: dict[str, Any], *,
                          purpose: Purpose = "case_management", idempotency_key: str | None = None) -> Case:
        return await self.send(calls.create_case(person, screening, purpose=purpose, idempotency_key=idempotency_key))

    async def read_case(self, case_id: str, *, purpose: Purpose) -> Case:
        """The case as this agency may see it; ``RefNetError`` 404 if it may not see it at all."""
        return await self.send(calls.read_case(case_id, purpose=purpose))

    async def record_consent(self, case_id: str, consent: dict[str, Any]) -> Consent:
        return await self.send(calls.record_consent(case_id, consent))

    async def consents(self, case_id: str, *, purpose: Purpose = "case_management") -> Page[Consent]:
        return await self.send(calls.consents(case_id, purpose=purpose))

    async def withdraw_consent(self, case_id: str, consent_id: str, *, reason: str | None = None) -> Consent:
        return await self.send(calls.withdraw_consent(case_id, consent_id, reason=reason))

    # --- referrals, the pull feed, webhook subscriptions (referral) ---------------------------------------

    async def create_referral(self, case_id: str, *, pathway: str, priority: str, reason: str,
                              shared_categories: Sequence[DataCategory], to_agency: str | None = None,
                              service_type: str | None = None, service_id: str | None = None,
                              idempotency_key: str | None = None) -> Referral:
        """Refer a case. Give your own ``idempotency_key`` and send it again on a retry after a lost answer: the
        same referral comes back, not a second one."""
        return await self.send(calls.create_referral(
            case_id, pathway=pathway, priority=priority, reason=reason, shared_categories=shared_categories,
            to_agency=to_agency, service_type=service_type, service_id=service_id, idempotency_key=idempotency_key))

    async def referrals(self, *, role: Literal["sent", "received"] = "received", status: str | None = None,
                        pathway: str | None = None, overdue: bool | None = None, limit: int = 50,
                        cursor: str | None = None) -> Page[Referral]:
        return await self.send(calls.referrals(role=role, status=status, pathway=pathway, overdue=overdue,
                                               limit=limit, cursor=cursor))

    async def referral(self, referral_id: str) -> Referral:
        return await self.send(calls.referral(referral_id))

    async def transition(self, referral_id: str, to: str, *, reason_code: str | None = None,
                         note: str | None = None) -> Referral:
        return await self.send(calls.transition(referral_id, to, reason_code=reason_code, note=note))

    async def indicators(self, *, from_month: str | None = None, to_month: str | None = None) -> AgencyIndicators:
        """This agency's own indicators for the months ``from_month`` to ``to_month`` (``YYYY-MM``; by default
        the twelve months up to the current one)."""
        return await self.send(calls.indicators(from_month=from_month, to_month=to_month))

    async def events(self, *, after: str = "0", wait: float = 0, limit: int = 100) -> Page[FeedEvent]:
        """The pull feed: this agency's referral events after the cursor ``after``, waiting up to ``wait``
        seconds for the first; keep ``next_cursor`` of the last page handled."""
        return await self.send(calls.events(after=after, wait=wait, limit=limit))

    async def subscribe(self, url: str, event_types: Sequence[str] | None = None) -> Subscription:
        """A webhook subscription; its ``secret`` is in this answer only -- keep it in your secret store."""
        return await self.send(calls.subscribe(url, event_types))

    async def subscriptions(self) -> Page[Subscription]:
        return await self.send(calls.subscriptions())

    async def subscription(self, subscription_id: str) -> Subscription:
        return await self.send(calls.subscription(subscription_id))

    async def unsubscribe(self, subscription_id: str) -> None:
        return await self.send(calls.unsubscribe(subscription_id))

    async def rotate_secret(self, subscription_id: str) -> Subscription:
        return await self.send(calls.rotate_secret(subscription_id))

    async def deliveries(self, subscription_id: str, *, limit: int = 50,
                         cursor: str | None = None) -> Page[Delivery]:
        return await self.send(calls.deliveries(subscription_id, limit=limit, cursor=cursor))

    # --- the service directory and the token issuer's keys (registry) -------------------------------------

    async def services(self, *, taxonomy: str | None = None, country: str | None = None,
                       language: str | None = None, accepts_children: bool | None = None,
                       accepting: bool | None = None, near: str | None = None, radius_km: float | None = None,
                       q: str | None = None, limit: int = 20, cursor: str | None = None,
                       accept_language: str | None = None) -> Page[Service]:
        return await self.send(calls.services(
            taxonomy=taxonomy, country=country, language=language, accepts_children=accepts_children,
            accepting=accepting, near=near, radius_km=radius_km, q=q, limit=limit, cursor=cursor,
            accept_language=accept_language))

    async def service(self, service_id: str, *, accept_language: str | None = None) -> Service:
        return await self.send(calls.service(service_id, accept_language=accept_language))

    async def jwks(self) -> dict[str, Any]:
        """The issuer's public keys (to verify an access token's signature)."""
        return await self.send(calls.jwks())

    # --- what an auditor asks (audit) ---------------------------------------------------------------------

    async def case_access(self, case_id: str) -> CaseAccess:
        """Who read (or tried to read) the case, when, why, under which consent."""
        return await self.send(calls.case_access(case_id))

    async def case_consent_entries(self, case_id: str) -> CaseEntries:
        return await self.send(calls.case_consent_entries(case_id))

    async def audit_entries(self, *, case_id: str | None = None, agency: str | None = None,
                            action: str | None = None, since: str | None = None, until: str | None = None,
                            limit: int = 100, cursor: str | None = None) -> Page[AuditEntry]:
        return await self.send(calls.audit_entries(case_id=case_id, agency=agency, action=action, since=since,
                                                   until=until, limit=limit, cursor=cursor))

    async def checkpoint(self) -> Checkpoint:
        return await self.send(calls.checkpoint())

    async def inclusion_proof(self, index: int, *, tree_size: int | None = None) -> InclusionProof:
        return await self.send(calls.inclusion_proof(index, tree_size=tree_size))

    async def consistency_proof(self, first: int, *, second: int | None = None) -> ConsistencyProof:
        return await self.send(calls.consistency_proof(first, second=second))

    async def log_key(self) -> LogKey:
        return await self.send(calls.log_key())


class RefNet(_Base):
    """One agency's client, synchronous. ``with RefNet.from_credentials(path) as refnet:``."""

    def __init__(self, credentials: Credentials, endpoints: Endpoints | None = None, *, scope: str | None = None,
                 acting_user: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(credentials, endpoints or Endpoints(), acting_user)
        self.oauth = OAuth2Client(**oauth_options(credentials, scope), timeout=timeout, transport=transport)
        self.oauth.register_compliance_hook("access_token_response", refuse_unless_issued)
        self._first_token = threading.Lock()  # concurrent first calls (threads) share one token request

    @classmethod
    def from_credentials(cls, credentials: Credentials | str | Path, endpoints: Endpoints | None = None, *,
                         stack_state: str | Path | None = None, **options: Any) -> RefNet:
        """From a credentials file as ``refnet`` writes them; the services' URLs from ``endpoints``, else a
        stack's state file (``.refnet/state.json``), else the local defaults."""
        return cls(_credentials(credentials), _endpoints(endpoints, stack_state), **options)

    def __enter__(self) -> RefNet:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                  trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.oauth.close()

    def token(self) -> str:
        """The access token the next call sends: asked for now if there is none or it is about to expire."""
        if not self.oauth.token:
            with self._first_token:
                if not self.oauth.token:
                    self.oauth.fetch_token()
        else:
            self.oauth.ensure_active_token(self.oauth.token)
        return str(self.oauth.token["access_token"])

    def forget_token(self) -> None:
        """Ask for a new token on the next call (after the agency's key was rotated, say)."""
        self.oauth.token = None

    def send(self, call: Call[T]) -> T:
        """Send one request of ``calls``; a 401 (token revoked, keys rotated) gets one fresh token and one retry."""
        for attempt in (1, 2):
            if call.authenticated:
                self.token()
            response = self.oauth.request(**self._request(call))
            if response.status_code == 401 and call.authenticated and attempt == 1:
                self.forget_token()
                continue
            break
        return self._answer(call, response)

    # --- cases and consent (intake) -----------------------------------------------------------------------

    def create_case(self, person: dict[str, Any], screening: dict[str, Any], *,
                    purpose: Purpose = "case_management", idempotency_key: str | None = None) -> Case:
        return self.send(calls.create_case(person, screening, purpose=purpose, idempotency_key=idempotency_key))

    def read_case(self, case_id: str, *, purpose: Purpose) -> Case:
        """The case as this agency may see it; ``RefNetError`` 404 if it may not see it at all."""
        return self.send(calls.read_case(case_id, purpose=purpose))

    def record_consent(self, case_id: str, consent: dict[str, Any]) -> Consent:
        return self.send(calls.record_consent(case_id, consent))

    def consents(self, case_id: str, *, purpose: Purpose = "case_management") -> Page[Consent]:
        return self.send(calls.consents(case_id, purpose=purpose))

    def withdraw_consent(self, case_id: str, consent_id: str, *, reason: str | None = None) -> Consent:
        return self.send(calls.withdraw_consent(case_id, consent_id, reason=reason))

    # --- referrals, the pull feed, webhook subscriptions (referral) ---------------------------------------

    def create_referral(self, case_id: str, *, pathway: str, priority: str, reason: str,
                        shared_categories: Sequence[DataCategory], to_agency: str | None = None,
                        service_type: str | None = None, service_id: str | None = None,
                        idempotency_key: str | None = None) -> Referral:
        """Refer a case. Give your own ``idempotency_key`` and send it again on a retry after a lost answer: the
        same referral comes back, not a second one."""
        return self.send(calls.create_referral(
      case_id, pathway=pathway, priority=priority, reason=reason, shared_categories=shared_categories,
      to_agency=to_agency, service_type=service_type, service_id=service_id, idempotency_key=idempotency_key))

    def referrals(self, *, role: Literal["sent", "received"] = "received", status: str | None = None,
                  pathway: str | None = None, overdue: bool | None = None, limit: int = 50,
                  cursor: str | None = None) -> Page[Referral]:
        return self.send(calls.referrals(role=role, status=status, pathway=pathway, overdue=overdue,
                                         limit=limit, cursor=cursor))

    def referral(self, referral_id: str) -> Referral:
        return self.send(calls.referral(referral_id))

    def transition(self, referral_id: str, to: str, *, reason_code: str | None = None,
                   note: str | None = None) -> Referral:
        return self.send(calls.transition(referral_id, to, reason_code=reason_code, note=note))

    def indicators(self, *, from_month: str | None = None, to_month: str | None = None) -> AgencyIndicators:
        """This agency's own indicators for the months ``from_month`` to ``to_month`` (``YYYY-MM``; by default
        the twelve months up to the current one)."""
        return self.send(calls.indicators(from_month=from_month, to_month=to_month))

    def events(self, *, after: str = "0", wait: float = 0, limit: int = 100) -> Page[FeedEvent]:
        """The pull feed: this agency's referral events after the cursor ``after``, waiting up to ``wait``
        seconds for the first; keep ``next_cursor`` of the last page handled."""
        return self.send(calls.events(after=after, wait=wait, limit=limit))

    def subscribe(self, url: str, event_types: Sequence[str] | None = None) -> Subscription:
        """A webhook subscription; its ``secret`` is in this answer only -- keep it in your secret store."""
        return self.send(calls.subscribe(url, event_types))

    def subscriptions(self) -> Page[Subscription]:
        return self.send(calls.subscriptions())

    def subscription(self, subscription_id: str) -> Subscription:
        return self.send(calls.subscription(subscription_id))

    def unsubscribe(self, subscription_id: str) -> None:
        return self.send(calls.unsubscribe(subscription_id))

    def rotate_secret(self, subscription_id: str) -> Subscription:
        return self.send(calls.rotate_secret(subscription_id))

    def deliveries(self, subscription_id: str, *, limit: int = 50,
                   cursor: str | None = None) -> Page[Delivery]:
        return self.send(calls.deliveries(subscription_id, limit=limit, cursor=cursor))

    # --- the service directory and the token issuer's keys (registry) -------------------------------------

    def services(self, *, taxonomy: str | None = None, country: str | None = None,
                 language: str | None = None, accepts_children: bool | None = None,
                 accepting: bool | None = None, near: str | None = None, radius_km: float | None = None,
                 q: str | None = None, limit: int = 20, cursor: str | None = None,
                 accept_language: str | None = None) -> Page[Service]:
        return self.send(calls.services(
      taxonomy=taxonomy, country=country, language=language, accepts_children=accepts_children,
      accepting=accepting, near=near, radius_km=radius_km, q=q, limit=limit, cursor=cursor,
      accept_language=accept_language))

    def service(self, service_id: str, *, accept_language: str | None = None) -> Service:
        return self.send(calls.service(service_id, accept_language=accept_language))

    def jwks(self) -> dict[str, Any]:
        """The issuer's public keys (to verify an access token's signature)."""
        return self.send(calls.jwks())

    # --- what an auditor asks (audit) ---------------------------------------------------------------------

    def case_access(self, case_id: str) -> CaseAccess:
        """Who read (or tried to read) the case, when, why, under which consent."""
        return self.send(calls.case_access(case_id))

    def case_consent_entries(self, case_id: str) -> CaseEntries:
        return self.send(calls.case_consent_entries(case_id))

    def audit_entries(self, *, case_id: str | None = None, agency: str | None = None,
                      action: str | None = None, since: str | None = None, until: str | None = None,
                      limit: int = 100, cursor: str | None = None) -> Page[AuditEntry]:
        return self.send(calls.audit_entries(case_id=case_id, agency=agency, action=action, since=since,
                                             until=until, limit=limit, cursor=cursor))

    def checkpoint(self) -> Checkpoint:
        return self.send(calls.checkpoint())

    def inclusion_proof(self, index: int, *, tree_size: int | None = None) -> InclusionProof:
        return self.send(calls.inclusion_proof(index, tree_size=tree_size))

    def consistency_proof(self, first: int, *, second: int | None = None) -> ConsistencyProof:
        return self.send(calls.consistency_proof(first, second=second))

    def log_key(self) -> LogKey:
        return self.send(calls.log_key())
