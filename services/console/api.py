"""console's routes: pages and forms. Each reads the request, calls one use case, renders one template.

Safety lives here once, for every route: ``signed_in`` (the server-side session, idle expiry), ``posted`` (the
form with its session-bound CSRF token), ``SecurityHeaders`` (CSP, no-store; pages.py). URLs carry ids only,
and page titles are fixed words: no personal data in either.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console import domain, pages
from services.console.deps import Deps, deps
from services.console.service import Refused, SignedIn, SignInFailed
from shared.text import Line

router = APIRouter(tags=["console"])
Uses = Annotated[Deps, Depends(deps)]

COOKIE = "refnet_console"
LANGUAGE_COOKIE = "refnet_console_lang"  # the language chosen before signing in (not personal)
PATH_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"
IdPath = Annotated[str, Path(pattern=PATH_ID)]


class NotSignedIn(Exception):
    """No session, or it ended: pages go to the sign-in page, the inbox's refresh answers 401."""

    def __init__(self, fragment: bool = False, expired: bool = False) -> None:
        self.fragment = fragment
        self.expired = expired


class PageRefused(Exception):
    """A page the person may not see (404: not even its existence) or do (403), or a form without its token."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


# --- the session, the language, the common page context -----------------------------------------------------


async def _signed_in(request: Request, uses: Uses, touch: bool) -> SignedIn:
    session_id = request.cookies.get(COOKIE)
    who = await uses.sessions.current(session_id, touch=touch)
    if who is None:
        raise NotSignedIn(fragment=not touch, expired=bool(session_id))
    return who


async def signed_in(request: Request, uses: Uses) -> SignedIn:
    return await _signed_in(request, uses, touch=True)


async def signed_in_quietly(request: Request, uses: Uses) -> SignedIn:
    """For the inbox's own refresh: it must not keep an unattended session alive."""
    return await _signed_in(request, uses, touch=False)


Who = Annotated[SignedIn, Depends(signed_in)]


def allowed(who: SignedIn, page: domain.Page) -> None:
    if not domain.may_use(who.roles, page):
        raise PageRefused(403, domain.GUARD_MESSAGES["forbidden"])


async def posted(request: Request, who: Who) -> domain.Form:
    """The posted form, once its CSRF token matches the session's."""
    async with request.form() as data:
        items = [(k, v) for k, v in data.multi_items() if isinstance(v, str)]
    form = domain.Form(items)
    if not domain.csrf_ok(who.session_id, form.one("csrf")):
        raise PageRefused(403, domain.FORM_EXPIRED)
    return form


Posted = Annotated[domain.Form, Depends(posted)]


def _language_before_sign_in(request: Request, uses: Deps) -> str:
    return domain.choose_language(request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language"),
                                  list(uses.pages.languages), uses.pages.default_language)


def _page(uses: Deps, template: str, who: SignedIn | None, language: str, status: int = 200,
          **context: Any) -> HTMLResponse:
    base: dict[str, Any] = {
        "who": who, "csrf": who.csrf if who else "", "nav": domain.pages_for(who.roles) if who else [],
        "languages": uses.pages.languages, "quick_exit_url": uses.pages.quick_exit_url,
        "idle_seconds": who.seconds_left if who else 0, "warn_seconds": uses.pages.warn_seconds,
        "refresh_seconds": uses.pages.refresh_seconds, "errors": {}, "message": None,
    }
    return pages.render(template, language, {**base, **context}, status)


def _cookie(response: Response, uses: Deps, value: str) -> None:
    response.set_cookie(COOKIE, value, httponly=True, secure=uses.pages.cookie_secure, samesite="lax", path="/")


def _forget(response: Response, uses: Deps) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, secure=uses.pages.cookie_secure, samesite="lax")


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _safe_return(path: str | None) -> str:
    """Back to a page of the console only (an open redirect would send a signed-in person anywhere)."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


# --- signing in and out, leaving ----------------------------------------------------------------------------


@router.get("/", summary="The person's first page, or the sign-in page")
async def home(request: Request, uses: Uses,
               state: Annotated[Line | None, Query(max_length=500, description="The provider's, after sign-out")]
               = None) -> Response:
    who = await uses.sessions.current(request.cookies.get(COOKIE))
    if who is None:
        return _see_other("/signin")
    first = domain.home_page(who.roles)
    if first is None:
        return _page(uses, "no_role.html", who, who.language)
    return _see_other({domain.Page.inbox: "/inbox", domain.Page.cases: "/cases",
                       domain.Page.overrides: "/overrides", domain.Page.audit: "/audit",
                       domain.Page.staff: "/staff", domain.Page.indicators: "/indicators",
                       domain.Page.webhooks: "/webhooks", domain.Page.services: "/services"}[first])


@router.get("/signin", summary="The sign-in page")
async def signin_page(request: Request, uses: Uses,
                      expired: Annotated[bool, Query(description="Signed out after inactivity.")] = False
                      ) -> HTMLResponse:
    return _page(uses, "signin.html", None, _language_before_sign_in(request, uses), expired=expired)


@router.get("/auth/login", summary="Start signing in at the provider (code + PKCE)")
async def login(request: Request, uses: Uses) -> Response:
    language = _language_before_sign_in(request, uses)
    try:
        started = await uses.sessions.begin("/", language)
    except SignInFailed:
        return _page(uses, "signin.html", None, language, status=503, expired=False, unavailable=True)
    response = RedirectResponse(started.url, status_code=303)
    _cookie(response, uses, started.session_id)
    return response


@router.get("/auth/callback", summary="The provider's answer")
async def callback(request: Request, uses: Uses,
                   code: Annotated[Line | None, Query(max_length=2000)] = None,
                   state: Annotated[Line | None, Query(max_length=500)] = None,
                   error: Annotated[Line | None, Query(max_length=200)] = None,
                   error_description: Annotated[Line | None, Query(max_length=2000)] = None,
                   iss: Annotated[Line | None, Query(max_length=500)] = None) -> Response:
    language = _language_before_sign_in(request, uses)
    try:
        session_id, back = await uses.sessions.finish(request.cookies.get(COOKIE), code if not error else None,
                                                      state)
    except SignInFailed:
        response: Response = _page(uses, "signin.html", None, language, status=400, expired=False, failed=True)
        _forget(response, uses)
        return response
    response = _see_other(_safe_return(back))
    _cookie(response, uses, session_id)
    return response


@router.post("/auth/logout", summary="Sign out (here and at the provider)")
async def logout(request: Request, uses: Uses, form: Posted) -> Response:
    url = await uses.sessions.end(request.cookies.get(COOKIE))
    # To the provider's end-session endpoint by a page that moves on by itself, not a redirect: a browser holds
    # a form's redirects to the page's form-action ('self'), and the provider is another origin.
    response: Response = (_page(uses, "leaving.html", None, _language_before_sign_in(request, uses), url=url)
                          if url else _see_other("/signed-out"))
    _forget(response, uses)
    return response


@router.get("/signed-out", summary="Signed out")
async def signed_out(request: Request, uses: Uses,
                     state: Annotated[Line | None, Query(max_length=500)] = None) -> HTMLResponse:
    return _page(uses, "signed_out.html", None, _language_before_sign_in(request, uses))


@router.get("/auth/expired", summary="Signed out after inactivity (the page's timer comes here)")
async def expired(request: Request, uses: Uses) -> Response:
    who = await uses.sessions.current(request.cookies.get(COOKIE), touch=False)
    await uses.sessions.drop(request.cookies.get(COOKIE))
    response = _see_other("/signin?expired=true")
    _forget(response, uses)
    if who is not None:
        response.set_cookie(LANGUAGE_COOKIE, who.language, httponly=True, secure=uses.pages.cookie_secure,
                            samesite="lax", path="/")
    return response


@router.get("/exit", summary="Quick exit: the session ends and the browser leaves for a neutral page")
async def quick_exit(request: Request, uses: Uses) -> Response:
    # No token asked for: leaving must work in one keystroke, and all a forged request could do is sign out.
    await uses.sessions.drop(request.cookies.get(COOKIE))
    response = _see_other(uses.pages.quick_exit_url)
    _forget(response, uses)
    response.headers["Clear-Site-Data"] = '"cache", "cookies", "storage"'
    return response


@router.get("/neutral", summary="A neutral page to leave to")
async def neutral(uses: Uses) -> HTMLResponse:
    return pages.render("neutral.html", "en", {})


@router.post("/language", summary="Choose the language (remembered for the person)")
async def choose_language(request: Request, uses: Uses) -> Response:
    async with request.form() as data:
        language = str(data.get("language") or "")
        back = str(data.get("back") or "/")
        token = data.get("csrf")
    if language not in uses.pages.languages:
        raise PageRefused(400, domain.NO_SUCH_LANGUAGE)
    who = await uses.sessions.current(request.cookies.get(COOKIE))
    if who is not None:
        if not domain.csrf_ok(who.session_id, token if isinstance(token, str) else None):
            raise PageRefused(403, domain.FORM_EXPIRED)
        await uses.sessions.set_language(who, language)
    response = _see_other(_safe_return(back))
    response.set_cookie(LANGUAGE_COOKIE, language, httponly=True, secure=uses.pages.cookie_secure, samesite="lax",
                        path="/")
    return response


# --- the caseworker's inbox and referrals -------------------------------------------------------------------

Role = Annotated[str, Query(pattern="^(received|sent)$", description="received or sent")]
StatusFilter = Annotated[str | None, Query(pattern="^[a-z_]{0,20}$")]  # empty: the filter form's "any"
Cursor = Annotated[str | None, Query(max_length=200)]


async def _queue(uses: Deps, who: SignedIn, role: str, status: str | None, pathway: str | None,
                 overdue: bool | None, cursor: str | None) -> dict[str, Any]:
    allowed(who, domain.Page.inbox)
    found = await uses.referrals.queue(who, role=role, status=status or None, pathway=pathway or None,
                                       overdue=overdue, cursor=cursor)
    # The next page keeps the filters (a status, a pathway, overdue: codes, never personal data).
    kept = {"role": role, "status": status, "pathway": pathway, "overdue": "true" if overdue else None,
            "cursor": found.get("next_cursor")}
    return {**found, "next_query": urlencode({k: v for k, v in kept.items() if v})}


@router.get("/inbox", summary="Referrals received and sent")
async def inbox(request: Request, uses: Uses, who: Who, role: Role = "received", status: StatusFilter = None,
                pathway: StatusFilter = None, overdue: bool | None = None, cursor: Cursor = None) -> HTMLResponse:
    found = await _queue(uses, who, role, status, pathway, overdue, cursor)
    return _page(uses, "inbox.html", who, who.language, found=found, role=role,
                 filters={"status": status or "", "pathway": pathway or "", "overdue": overdue},
                 statuses=domain.STATUSES, pathways=domain.PATHWAYS, query=str(request.url.query))


@router.get("/inbox/rows", summary="The inbox's rows, for its refresh without reloading")
async def inbox_rows(uses: Uses, who: Annotated[SignedIn, Depends(signed_in_quietly)], role: Role = "received",
                     status: StatusFilter = None, pathway: StatusFilter = None, overdue: bool | None = None,
                     cursor: Cursor = None) -> HTMLResponse:
    found = await _queue(uses, who, role, status, pathway, overdue, cursor)
    return _page(uses, "inbox_rows.html", who, who.language, found=found, role=role)


@router.get("/referrals/{referral_id}", summary="One referral: the minimised case, its history, the next moves")
async def referral_page(referral_id: IdPath, uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.inbox)
    opened = await uses.referrals.open(who, referral_id)
    return _page(uses, "referral.html", who, who.language, page=opened)


@router.post("/referrals/{referral_id}/move", summary="Make one of the referral's next moves")
async def move_referral(referral_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.inbox)
    to = form.one("to") or ""
    try:
        await uses.referrals.move(who, referral_id, to, form.one("reason_code"), form.one("note"))
    except Refused as refused:
        if refused.status == 404:
            raise
        opened = await uses.referrals.open(who, referral_id)
        return _page(uses, "referral.html", who, who.language, status=refused.status, page=opened,
                     message=domain.refusal_message(refused.problem_type, refused.status),
                     errors=domain.field_errors(refused.errors))
    return _see_other(f"/referrals/{referral_id}")


# --- cases: register, consent, refer ------------------------------------------------------------------------


def _in_a_year() -> str:
    return (datetime.now(UTC) + timedelta(days=365)).replace(microsecond=0).isoformat()


@router.get("/cases", summary="The agency's cases (ids and status only)")
async def cases(uses: Uses, who: Who, cursor: Cursor = None) -> HTMLResponse:
    allowed(who, domain.Page.cases)
    found = await uses.cases.mine(who, cursor)
    return _page(uses, "cases.html", who, who.language, found=found)


@router.get("/cases/new", summary="Register a case")
async def new_case(uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.cases)
    return _page(uses, "case_new.html", who, who.language, choices=await uses.cases.choices(), values={},
                 idempotency_key=str(uuid.uuid4()))


@router.post("/cases", summary="Register a case")
async def register_case(uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.cases)
    key = form.one("idempotency_key") or str(uuid.uuid4())
    try:
        created = await uses.cases.register(who, domain.case_body(form), key)
    except Refused as refused:
        if refused.status != 422:
            raise
        # A new key: nothing was registered, and the corrected form is another request.
        return _page(uses, "case_new.html", who, who.language, status=422, choices=await uses.cases.choices(),
                     values={k: v for k, v in form.values.items()}, idempotency_key=str(uuid.uuid4()),
                     errors=domain.field_errors(refused.errors),
                     message=domain.refusal_message(refused.problem_type, refused.status))
    return _see_other(f"/cases/{created['id']}")


async def _case_page(uses: Deps, who: SignedIn, case_id: str, status: int = 200, **context: Any) -> HTMLResponse:
    case = await uses.cases.read(who, case_id)
    consents = await uses.cases.consents(who, case_id)
    overrides = [{**o, "approvable": domain.may_approve(o, me=who.person.sub, roles=who.roles),
                  "endable": domain.may_end(o, me=who.person.sub, roles=who.roles)}
                 for o in await uses.cases.overrides(who, case_id)]
    return _page(uses, "case.html", who, who.language, status=status, case=case, consents=consents,
                 overrides=overrides,
                 choices=await uses.cases.choices(), pathways=domain.PATHWAYS, priorities=domain.PRIORITIES,
                 valid_until=_in_a_year(), **context)


@router.get("/cases/{case_id}", summary="One case: its consent and referring it")
async def case_page(case_id: IdPath, uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.cases)
    return await _case_page(uses, who, case_id)


@router.post("/cases/{case_id}/consents", summary="Record a consent")
async def record_consent(case_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.cases)
    choices = await uses.cases.choices()
    try:
        await uses.cases.grant(who, case_id, domain.consent_body(form, choices["checklist"], _in_a_year()))
    except Refused as refused:
        if refused.status == 404:
            raise
        return await _case_page(uses, who, case_id, status=refused.status, consent_errors=domain.field_errors(
            refused.errors), message=domain.refusal_message(refused.problem_type, refused.status))
    return _see_other(f"/cases/{case_id}")


@router.post("/cases/{case_id}/consents/{consent_id}/withdraw", summary="Withdraw a consent")
async def withdraw_consent(case_id: IdPath, consent_id: IdPath, uses: Uses,
                           who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.cases)
    try:
        await uses.cases.withdraw(who, case_id, consent_id, form.one("reason"))
    except Refused as refused:
        if refused.status == 404:
            raise
        return await _case_page(uses, who, case_id, status=refused.status,
                                message=domain.refusal_message(refused.problem_type, refused.status))
    return _see_other(f"/cases/{case_id}")


@router.get("/cases/{case_id}/refer", summary="Refer a case: search the directory")
async def refer_page(case_id: IdPath, uses: Uses, who: Who,
                     need: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9.\-]{1,40}$")] = None,
                     country: Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$")] = None,
                     language: Annotated[str | None, Query(pattern=r"^[a-z]{2,3}$")] = None) -> HTMLResponse:
    allowed(who, domain.Page.cases)
    place = country.upper() if country else None
    found = await uses.directory.search(who, taxonomy=need, country=place, language=language,
                                        query=None) if (need or country or language) else None
    suggested = await uses.directory.suggest(who, case_id=case_id, service_type=need, country=place,
                                             language=language) if need else []
    return _page(uses, "refer.html", who, who.language, case_id=case_id, services=found, suggested=suggested,
                 search={"need": need or "", "country": country or "", "language": language or ""},
                 choices=await uses.cases.choices(), pathways=domain.PATHWAYS, priorities=domain.PRIORITIES,
                 idempotency_key=str(uuid.uuid4()))


@router.post("/cases/{case_id}/refer", summary="Refer a case")
async def refer(case_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.cases)
    try:
        # The form's own key: a form sent twice (a double click, a retry on a slow line) refers once.
        created = await uses.referrals.refer(who, domain.referral_body(form, case_id),
                                             form.one("idempotency_key") or str(uuid.uuid4()))
    except Refused as refused:
        if refused.status == 404:
            raise
        return _page(uses, "refer.html", who, who.language, status=refused.status, case_id=case_id, services=None,
                     search={"need": "", "country": "", "language": ""}, choices=await uses.cases.choices(),
                     pathways=domain.PATHWAYS, priorities=domain.PRIORITIES, idempotency_key=str(uuid.uuid4()),
                     errors=domain.field_errors(refused.errors), values=form.values,
                     message=domain.refusal_message(refused.problem_type, refused.status))
    return _see_other(f"/referrals/{created['id']}")


# --- risk-to-life overrides: requested by one person, approved by another ---------------------------------


@router.post("/cases/{case_id}/overrides", summary="Request a risk-to-life override")
async def request_override(case_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.cases)
    try:
        await uses.cases.request_override(who, case_id, form.one("recipient_agency") or "",
                                          form.one("justification") or "")
    except Refused as refused:
        if refused.status == 404:
            raise
        return await _case_page(uses, who, case_id, status=refused.status,
                                override_errors=domain.field_errors(refused.errors),
                                message=domain.refusal_message(refused.problem_type, refused.status))
    return _see_other(f"/cases/{case_id}")


@router.post("/cases/{case_id}/overrides/{override_id}/decision", summary="Approve or refuse an override")
async def decide_override(case_id: IdPath, override_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.cases)
    approve = form.one("decision") == "approve"
    back = "/overrides" if form.one("back") == "overrides" else f"/cases/{case_id}"
    try:
        await uses.cases.decide_override(who, case_id, override_id, approve)
    except Refused as refused:
        if refused.status == 404:
            raise
        raise PageRefused(refused.status, domain.refusal_message(refused.problem_type, refused.status)) from None
    return _see_other(back)


@router.get("/overrides", summary="The supervisor's page: pending overrides, the agency's overdue referrals")
async def overrides(uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.overrides)
    pending = await uses.cases.pending_overrides(who)
    received = await uses.referrals.queue(who, role="received", status=None, pathway=None, overdue=True, cursor=None)
    sent = await uses.referrals.queue(who, role="sent", status=None, pathway=None, overdue=True, cursor=None)
    return _page(uses, "overrides.html", who, who.language, pending=pending,
                 overdue={"received": received.get("items", []), "sent": sent.get("items", [])})


# --- the auditor ------------------------------------------------------------------------------------------


@router.get("/audit", summary="The auditor's start: a case's history, the signed checkpoint")
async def audit_home(uses: Uses, who: Who, case_id: Annotated[str | None, Query(pattern=PATH_ID)] = None
                     ) -> Response:
    allowed(who, domain.Page.audit)
    if case_id:
        return _see_other(f"/audit/cases/{case_id}")
    return _page(uses, "audit.html", who, who.language)


@router.get("/audit/cases/{case_id}", summary="A case's access and consent history")
async def audit_case(case_id: IdPath, uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.audit)
    history = await uses.audit.case_history(who, case_id)
    return _page(uses, "audit_case.html", who, who.language, case_id=case_id, history=history)


@router.get("/audit/checkpoint", summary="The signed checkpoint, verified in the browser")
async def audit_checkpoint(uses: Uses, who: Who,
                           index: Annotated[int | None, Query(ge=0)] = None) -> HTMLResponse:
    allowed(who, domain.Page.audit)
    found = await uses.audit.checkpoint(who)
    proof = None
    checkpoint = found.get("checkpoint") or {}
    size = checkpoint.get("tree_size") if isinstance(checkpoint, dict) else None
    if index is not None and isinstance(size, int) and index < size:
        proof = await uses.audit.inclusion(who, index, size)
    return _page(uses, "audit_checkpoint.html", who, who.language, found=found, proof=proof, index=index)


@router.get("/indicators", summary="The agency's own numbers")
async def agency_indicators(uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.indicators)
    return _page(uses, "indicators.html", who, who.language, figures=await uses.referrals.indicators(who))


# --- the agency admin: staff -------------------------------------------------------------------------------

STAFF_ROLES = ["caseworker", "supervisor", "agency_admin"]


async def _staff_page(uses: Deps, who: SignedIn, status: int = 200, **context: Any) -> HTMLResponse:
    return _page(uses, "staff.html", who, who.language, status=status, members=await uses.staff.members(who),
                 roles=STAFF_ROLES, **context)


@router.get("/staff", summary="The agency's staff")
async def staff(uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.staff)
    return await _staff_page(uses, who)


@router.post("/staff", summary="Invite a person (a one-time link, shown once)")
async def invite(uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.staff)
    try:
        link = await uses.staff.invite(who, form.one("login") or "", form.many("roles"))
    except Refused as refused:
        if refused.status == 404:
            raise
        return await _staff_page(uses, who, status=refused.status, errors=domain.field_errors(refused.errors),
                                 message=domain.refusal_message(refused.problem_type, refused.status))
    # The link is a secret: on this answer only (no-store), never in a URL or a log.
    return await _staff_page(uses, who, link=link)


@router.post("/staff/{person_id}/reset", summary="Reset a person's sign-in (a new one-time link)")
async def reset_sign_in(person_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.staff)
    link = await uses.staff.reset(who, person_id)
    return await _staff_page(uses, who, link=link)


# --- the agency admin: webhook subscriptions and their deliveries ------------------------------------------


async def _webhooks_page(uses: Deps, who: SignedIn, status: int = 200, **context: Any) -> HTMLResponse:
    return _page(uses, "webhooks.html", who, who.language, status=status,
                 subscriptions=await uses.webhooks.subscriptions(who), **context)


@router.get("/webhooks", summary="The agency's webhook subscriptions")
async def webhooks(uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.webhooks)
    return await _webhooks_page(uses, who)


@router.post("/webhooks", summary="Subscribe a webhook (its signing secret shown once)")
async def subscribe(uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.webhooks)
    try:
        created = await uses.webhooks.subscribe(who, domain.subscription_body(form))
    except Refused as refused:
        if refused.status == 404:
            raise
        return await _webhooks_page(uses, who, status=refused.status, errors=domain.field_errors(refused.errors),
                                    message=domain.refusal_message(refused.problem_type, refused.status),
                                    url=form.one("url") or "", event_types=form.one("event_types") or "")
    # The secret is on this answer only (no-store), never in a URL or a log.
    return await _webhooks_page(uses, who, secret=created)


@router.get("/webhooks/{subscription_id}", summary="A subscription and its recent deliveries")
async def webhook(subscription_id: IdPath, uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.webhooks)
    subscription = await uses.webhooks.subscription(who, subscription_id)
    return _page(uses, "webhook.html", who, who.language, subscription=subscription,
                 deliveries=await uses.webhooks.deliveries(who, subscription_id))


@router.post("/webhooks/{subscription_id}/rotate", summary="A new signing secret (shown once)")
async def rotate_webhook_secret(subscription_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.webhooks)
    rotated = await uses.webhooks.rotate(who, subscription_id)
    return await _webhooks_page(uses, who, secret=rotated)


@router.post("/webhooks/{subscription_id}/reactivate", summary="Resume a disabled subscription")
async def reactivate_webhook(subscription_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.webhooks)
    await uses.webhooks.reactivate(who, subscription_id)
    return _see_other("/webhooks")


@router.post("/webhooks/{subscription_id}/delete", summary="Stop delivering to a webhook")
async def delete_webhook(subscription_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.webhooks)
    await uses.webhooks.delete(who, subscription_id)
    return _see_other("/webhooks")


# --- the agency admin: the agency's services in the directory and their capacity ---------------------------


async def _services_page(uses: Deps, who: SignedIn, status: int = 200, **context: Any) -> HTMLResponse:
    return _page(uses, "services.html", who, who.language, status=status,
                 services=await uses.services.of_agency(who), statuses=domain.CAPACITY_STATUSES, **context)


@router.get("/services", summary="The agency's services in the directory and their capacity")
async def agency_services(uses: Uses, who: Who) -> HTMLResponse:
    allowed(who, domain.Page.services)
    return await _services_page(uses, who)


@router.post("/services/{service_id}/capacity", summary="Set a service's capacity")
async def set_capacity(service_id: IdPath, uses: Uses, who: Who, form: Posted) -> Response:
    allowed(who, domain.Page.services)
    try:
        await uses.services.set_capacity(who, service_id, domain.capacity_body(form))
    except Refused as refused:
        if refused.status == 404:
            raise
        return await _services_page(uses, who, status=refused.status, errors=domain.field_errors(refused.errors),
                                    failed=service_id, typed=domain.capacity_body(form),
                                    message=domain.refusal_message(refused.problem_type, refused.status))
    return _see_other("/services")


# --- refusals as pages ------------------------------------------------------------------------------------


def install_page_handlers(app: FastAPI) -> None:
    """An API's refusal, a page refused, a session that ended: each a page, never a 500 or a JSON body."""

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if exc.fragment:
            return Response(status_code=401)
        return _see_other("/signin?expired=true" if exc.expired else "/signin")

    async def _refusal_page(request: Request, status: int, message: str) -> Response:
        uses = request.app.state.runtime.need(Deps)
        who = await uses.sessions.current(request.cookies.get(COOKIE), touch=False)
        language = who.language if who else _language_before_sign_in(request, uses)
        return _page(uses, "refused.html", who, language, status=status, message=message, code=status)

    @app.exception_handler(PageRefused)
    async def _page_refused(request: Request, exc: PageRefused) -> Response:
        return await _refusal_page(request, exc.status, exc.message)

    @app.exception_handler(Refused)
    async def _api_refused(request: Request, exc: Refused) -> Response:
        if exc.status == 401:  # the person's token was refused (revoked, say): sign in again
            await request.app.state.runtime.need(Deps).sessions.drop(request.cookies.get(COOKIE))
            return _see_other("/signin")
        status = exc.status if exc.status in (400, 403, 404, 409, 422, 429) else 502
        return await _refusal_page(request, status, domain.refusal_message(exc.problem_type, exc.status))
