"""registry's OpenID Connect provider routes (issue #20): discovery, the authorization endpoint with its
sign-in form, userinfo, RP-initiated logout, and the enrolment page of a one-time link.

The pages are plain HTML forms, no JavaScript: they work from a browser, curl or httpx. Every form carries a
CSRF token that must match a cookie (double submit; the cookies are SameSite=Lax, HttpOnly). The token
endpoint stays api.py's: its person grants are answered by service/sign_in.py.
"""

from __future__ import annotations

import hmac
import html
import re
import secrets
from collections.abc import Callable
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Header, Query, Request, Security
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from services.registry import domain
from services.registry.deps import Deps, deps
from services.registry.people_schemas import OpenIDConfiguration, UserInfo
from services.registry.service.oidc_provider import PreparedRequest, SignedIn
from services.registry.service.sign_in import Answer
from shared.auth.dependencies import bearer_scheme
from shared.auth.principal import ACTING_USER_HEADER, check_person_acts_as_themself
from shared.auth.problems import missing_token
from shared.errors import PROBLEM_MEDIA_TYPE, Problem, problem_response
from shared.text import Line

router = APIRouter(tags=["sign-in"])
F = TypeVar("F", bound=Callable[..., Any])
Registry = Annotated[Deps, Depends(deps)]

SESSION_COOKIE = "refnet_signin"
CSRF_COOKIE = "refnet_csrf"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_PAGE_HEADERS = {**NO_STORE, "Content-Security-Policy": "default-src 'none'; form-action 'self'",
                 "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
_HTML = {"content": {"text/html": {"schema": {"type": "string", "description": "An HTML page."}}}}
#: A status the page answers with HTML (to a browser) and RefNet's own checks with a problem (RFC 9457): a
#: parameter that is not valid (422), a body that is not a form (400).
_HTML_OR_PROBLEM = {"content": {**_HTML["content"], PROBLEM_MEDIA_TYPE: {
    "schema": {"$ref": "#/components/schemas/Problem"}}}}


def _get_and_post(path: str, name: str, **kwargs: Any) -> Callable[[F], F]:
    """One route answering GET and POST (forms post back to it), each its own operation in the document."""

    def register(endpoint: F) -> F:
        router.add_api_route(path, endpoint, methods=["GET"], operation_id=f"{name}_get", **kwargs)
        router.add_api_route(path, endpoint, methods=["POST"], operation_id=f"{name}_post", **kwargs)
        return endpoint

    return register


def _q(description: str, example: str) -> Any:
    return Query(description=description, examples=[example], max_length=2048)


# The authorization request's parameters (RFC 6749 4.1.1, RFC 7636, OIDC Core 3.1.2.1), as `/oauth/authorize`
# and the federated start (federation_api.py) both take them.
ResponseType = Annotated[Line | None, _q("Must be `code`.", "code")]
ClientIdParam = Annotated[Line | None, _q("The first-party client's id.", "refnet-console")]
RedirectUri = Annotated[Line | None, _q("One of the client's registered redirect URIs (exact match).",
                                        "http://127.0.0.1:8005/auth/callback")]
ScopeParam = Annotated[Line | None, _q("`openid` for an ID token; API scopes follow the person's roles.", "openid")]
StateParam = Annotated[Line | None, _q("Returned to the client unchanged.", "af0ifjsldkj")]
NonceParam = Annotated[Line | None, _q("Put into the ID token for the client to check.", "n-0S6_WzA2Mj")]
CodeChallenge = Annotated[Line | None, _q("PKCE: BASE64URL(SHA-256(code_verifier)); required.",
                                          "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")]


# --- discovery ---------------------------------------------------------------------------------------------


@router.get("/.well-known/openid-configuration", summary="OpenID Connect Discovery 1.0 metadata")
async def openid_configuration(registry: Registry) -> OpenIDConfiguration:
    issuer = registry.settings.issuer.rstrip("/")
    return OpenIDConfiguration(
        issuer=registry.settings.issuer, authorization_endpoint=issuer + "/oauth/authorize",
        token_endpoint=issuer + "/oauth/token", userinfo_endpoint=issuer + "/oauth/userinfo",
        end_session_endpoint=issuer + "/oauth/end_session", jwks_uri=issuer + "/.well-known/jwks.json",
        response_types_supported=["code"], response_modes_supported=["query"],
        grant_types_supported=list(domain.GRANT_TYPES),
        subject_types_supported=["public"], id_token_signing_alg_values_supported=["ES256"],
        scopes_supported=domain.scopes_supported(),
        claims_supported=["sub", "sid", "agency", "roles", "amr", "acr", "auth_time", "nonce", "preferred_username"],
        code_challenge_methods_supported=list(domain.CODE_CHALLENGE_METHODS),
        token_endpoint_auth_methods_supported=["private_key_jwt", "client_secret_basic", "none"],
        token_endpoint_auth_signing_alg_values_supported=list(domain.ASSERTION_ALGORITHMS),
        acr_values_supported=[domain.ACR_MFA, domain.ACR_PASSWORD],
        amr_values_supported=[domain.AMR_PASSWORD, domain.AMR_OTP])


# --- pages ---------------------------------------------------------------------------------------------------


#: The client origin a sign-in form's answer redirects to (its validated redirect URI): browsers hold a form's
#: redirects to form-action too, so 'self' alone stopped the code on its way to the client (issue #21).
_FORM_TARGET: ContextVar[str] = ContextVar("form_target", default="")


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
                f"</title><meta name=\"viewport\" content=\"width=device-width\"></head><body>"
                f"<main><h1>{html.escape(title)}</h1>{body}</main></body></html>")
    headers = dict(_PAGE_HEADERS)
    if _FORM_TARGET.get():
        headers["Content-Security-Policy"] = f"default-src 'none'; form-action 'self' {_FORM_TARGET.get()}"
    return HTMLResponse(document, status_code=status, headers=headers)


def _message(text: str | None) -> str:
    return f'<p role="alert" id="message">{html.escape(text)}</p>' if text else ""


def _csrf(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def _csrf_ok(request: Request, form: dict[str, str]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    sent = form.get("csrf")
    return bool(cookie and sent) and hmac.compare_digest(str(cookie), str(sent))


def _secure(registry: Deps) -> bool:
    if registry.settings.cookie_secure is not None:
        return registry.settings.cookie_secure
    return registry.settings.issuer.startswith("https://")


def _with_cookies(response: Response, registry: Deps, csrf: str | None = None,
                  session_token: str | None = None, clear_session: bool = False) -> Response:
    secure = _secure(registry)
    if csrf is not None:
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="lax", secure=secure, path="/")
    if session_token is not None:
        response.set_cookie(SESSION_COOKIE, session_token, httponly=True, samesite="lax", secure=secure, path="/")
    elif clear_session:
        response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
    return response


def _password_form(action: str, csrf: str, message: str | None = None, status: int = 200,
                   agency: str = "", login: str = "") -> HTMLResponse:
    return _page("Sign in to RefNet", _message(message) + f"""
<form method="post" action="{html.escape(action)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}"><input type="hidden" name="step" value="password">
<p><label>Agency <input name="agency" value="{html.escape(agency)}" required autocomplete="organization"></label></p>
<p><label>Login <input name="login" value="{html.escape(login)}" required autocomplete="username"></label></p>
<p><label>Password <input name="password" type="password" required autocomplete="current-password"></label></p>
<p><button type="submit">Continue</button></p></form>
<form method="post" action="{html.escape(action)}" id="federated">
<input type="hidden" name="csrf" value="{html.escape(csrf)}"><input type="hidden" name="step" value="federated">
<p><label>Or sign in with your agency's own account: agency
<input name="agency" value="{html.escape(agency)}" required autocomplete="organization"></label>
<button type="submit">Continue</button></p></form>""", status)


def _code_form(action: str, csrf: str, message: str | None = None, status: int = 200) -> HTMLResponse:
    return _page("Second factor", _message(message) + f"""
<form method="post" action="{html.escape(action)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}"><input type="hidden" name="step" value="otp">
<p><label>Code from your authenticator app <input name="code" inputmode="numeric" pattern="[0-9]{{6}}" required
autocomplete="one-time-code"></label></p>
<p><button type="submit">Sign in</button></p></form>""", status)


def _wants_page(request: Request) -> bool:
    """Whether the caller is a browser (its Accept names HTML): it gets pages, anyone else problems."""
    return "text/html" in request.headers.get("accept", "")


def _refusal(request: Request, title: str, text: str, status: int, slug: str) -> Response:
    """A refused request: a page for a browser, a problem (RFC 9457) for any other caller. ``text`` is shown to
    either, so it names what is wrong, never a person's data."""
    if not _wants_page(request):
        return problem_response(Problem(status, slug, text, headers=NO_STORE), request)
    return _page(title, _message(text), status)


def _answer(answer: Answer, request: Request) -> Response:
    """authlib's answer: a redirect to the client (a code, or an error once the redirect URI is the
    client's), else what is wrong with the request: a page for a browser, a problem (RFC 9457) for others."""
    if answer.location is not None and 300 <= answer.status < 400:
        return RedirectResponse(answer.location, status_code=302, headers=NO_STORE)
    body = answer.body if isinstance(answer.body, dict) else dict(answer.body or [])
    error = str(body.get("error") or "invalid_request")
    said = f"{error}: {body.get('error_description') or error}"
    # authlib's description names the parameter that is wrong (never a person's data).
    slug = re.sub(r"[^a-z0-9-]", "-", error.lower())  # invalid_request -> invalid-request
    return _refusal(request, "The sign-in request is not valid", said, answer.status or 400, slug)


def _prepared(request: Request, params: list[tuple[str, str]], method: str | None = None) -> PreparedRequest:
    return PreparedRequest(method or request.method, str(request.url), dict(request.headers), params)


async def _form(request: Request) -> dict[str, str]:
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception:
        raise Problem(400, "invalid-form", "The body is not a valid form.") from None
    return {name: value for name, value in form.items() if isinstance(value, str)}


# --- the authorization endpoint -------------------------------------------------------------------------------


_AUTHORIZE_FORM = {"requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "description": "A step of the sign-in form (the page's own form posts it).",
    "properties": {
        "csrf": {"type": "string", "description": "The form's CSRF token (it matches a cookie).",
                 "examples": ["q1w2e3r4t5y6u7i8o9p0"]},
        "step": {"type": "string", "enum": ["password", "otp", "federated"], "description": "Which step this "
                 "is (`federated`: on to the agency's own identity provider).",
                 "examples": ["password"]},
        "agency": {"type": "string", "description": "The agency's short name or id.", "examples": ["iom"]},
        "login": {"type": "string", "description": "The person's login inside the agency.", "examples": ["cw-0142"]},
        "password": {"type": "string", "description": "The person's password.", "examples": ["(the password)"]},
        "code": {"type": "string", "description": "The TOTP code of the person's authenticator app.",
                 "examples": ["123456"]},
    }}}}}}


@_get_and_post("/oauth/authorize", "authorize", response_class=HTMLResponse,
                  summary="Authorization endpoint: sign in, then back to the client with a code",
                  responses={200: {"description": "The sign-in form (password, then the second factor).", **_HTML},
                             302: {"description": "Back to the client's redirect URI with a code (or an error)."},
                             400: {"description": "The authorization request is not valid: an HTML page for a "
                                                  "browser (Accept: text/html), else a problem; or the body is "
                                                  "not a form (a problem).", **_HTML_OR_PROBLEM},
                             401: {"description": "A sign-in step was refused (the form again, saying so).",
                                   **_HTML},
                             429: {"description": "Too many sign-in attempts from this address.", **_HTML}},
                  openapi_extra=_AUTHORIZE_FORM)
async def authorize(
    request: Request, registry: Registry,
    response_type: ResponseType = None, client_id: ClientIdParam = None, redirect_uri: RedirectUri = None,
    scope: ScopeParam = None, state: StateParam = None, nonce: NonceParam = None,
    code_challenge: CodeChallenge = None,
    code_challenge_method: Annotated[Line | None, _q("PKCE method: `S256` (required; `plain` is refused).",
                                                    "S256")] = None,
    prompt: Annotated[Line | None, _q("`login` to sign in again even with a live session.", "login")] = None,
) -> Response:
    _FORM_TARGET.set("")  # until the request is checked (a context can outlive one request in tests)
    sign_in = registry.sign_in
    query = list(request.query_params.multi_items())
    prepared = _prepared(request, query, "GET")
    session_token = request.cookies.get(SESSION_COOKIE)
    # A live sign-in answers at once (unless the client asks for a new one); prompt=none without one goes
    # back to the client with login_required (authlib's OpenID Connect prompt rules).
    user = await sign_in.current(session_token) if request.method == "GET" and prompt != "login" else None
    refused = await sign_in.check_request(prepared, user)
    if refused is not None:
        return _answer(refused, request)
    if redirect_uri:  # one of the client's registered URIs (checked just above): its origin only
        target = urlsplit(redirect_uri)
        _FORM_TARGET.set(f"{target.scheme}://{target.netloc}")
    action = "/oauth/authorize?" + urlencode(query)
    csrf = _csrf(request)

    async def signed_in(user: SignedIn, new_session: str | None = None) -> Response:
        return _with_cookies(_answer(await sign_in.issue_code(prepared, user), request), registry,
                             session_token=new_session)

    if request.method == "GET":
        if user is not None:
            return await signed_in(user)
        if await sign_in.pending_second_factor(session_token):
            return _with_cookies(_code_form(action, csrf), registry, csrf=csrf)
        return _with_cookies(_password_form(action, csrf), registry, csrf=csrf)

    if not sign_in.limiter.allow("sign-in|" + (request.client.host if request.client else "unknown")):
        return _page("Too many attempts", _message("Too many sign-in attempts from here; wait a minute."), 429)
    form = await _form(request)
    if not _csrf_ok(request, form):
        return _with_cookies(_password_form(action, csrf, "The form has expired; please sign in again.", 400),
                             registry, csrf=csrf)
    if form.get("step") == "federated":
        # The agency's own provider, when the operator trusts one for it (federation_api.py's routes).
        trusted = await registry.federation.for_agency(form.get("agency", "").strip())
        if trusted is None:
            return _password_form(action, csrf, "This agency does not use its own sign-in at RefNet: sign in with "
                                  "your login and password.", 400, agency=form.get("agency", "").strip())
        return RedirectResponse(f"/oauth/federated/{trusted.id}?" + urlencode(query), status_code=303,
                                headers=NO_STORE)
    if form.get("step") == "otp":
        step = await sign_in.second_factor_step(session_token, form.get("code", "").strip())
        if step.user is not None:
            return await signed_in(step.user)
        if step.needs_second_factor:
            return _code_form(action, csrf, step.refused, 401)
        return _with_cookies(_password_form(action, csrf, step.refused, 401), registry, clear_session=True)
    agency, login = form.get("agency", "").strip(), form.get("login", "").strip()
    step = await sign_in.password_step(agency, login, form.get("password", ""))
    if step.user is not None:
        return await signed_in(step.user, step.session_token)
    if step.needs_second_factor:
        return _with_cookies(_code_form(action, csrf), registry, session_token=step.session_token)
    return _password_form(action, csrf, step.refused, 401, agency=agency, login=login)


# --- userinfo ------------------------------------------------------------------------------------------------


@_get_and_post("/oauth/userinfo", "userinfo", summary="The signed-in person's claims")
async def userinfo(
    registry: Registry,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
    acting_user: Annotated[str | None, Header(
        alias=ACTING_USER_HEADER, description="May be left out or repeat the token's subject; naming anyone else "
                                              "is refused (403 acting-user-contradicts-token), as at every service.",
        examples=["person-0f4c2a9e8b7d4c1e9a6b3d2f1e0c9b8a"])] = None,
) -> UserInfo:
    """For a person's access token (not an agency system's): who the person is, their agency and roles."""
    if credentials is None:
        raise missing_token()
    info = await registry.sign_in.userinfo(credentials.credentials)
    # The resource servers' rule (shared/auth): a person acts only as themself.
    check_person_acts_as_themself(info["sub"], acting_user)
    return UserInfo(**info)


# --- RP-initiated logout -------------------------------------------------------------------------------------


@_get_and_post("/oauth/end_session", "end_session", response_class=HTMLResponse,
                  summary="RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0)",
                  responses={200: {"description": "Signed out, or the confirmation asked first (HTML page).",
                                   **_HTML},
                             302: {"description": "Signed out; back to the client's registered post-logout URI."},
                             400: {"description": "The logout request is not valid, say its ID token: an HTML page "
                                                  "for a browser (Accept: text/html), else a problem.",
                                   **_HTML_OR_PROBLEM}})
async def end_session(
    request: Request, registry: Registry,
    id_token_hint: Annotated[Line | None, _q("An ID token the provider issued to the client (it may have "
                                            "expired): names the session to end.", "eyJhbGciOiJFUzI1NiJ9...")] = None,
    client_id: Annotated[Line | None, _q("The client asking (must be the ID token's audience).",
                                        "refnet-console")] = None,
    post_logout_redirect_uri: Annotated[Line | None, _q("Where to go afterwards: one of the client's registered "
                                                       "post-logout URIs.", "http://127.0.0.1:8005/")] = None,
    state: Annotated[Line | None, _q("Returned with the redirect.", "af0ifjsldkj")] = None,
) -> Response:
    session_token = request.cookies.get(SESSION_COOKIE)
    csrf = _csrf(request)
    query = list(request.query_params.multi_items())
    # Without an ID token anyone's page could sign the person out: ask first (a form with a CSRF token).
    if id_token_hint is None and (request.method == "GET" or not _csrf_ok(request, await _form(request))):
        action = "/oauth/end_session?" + urlencode(query)
        return _with_cookies(_page("Sign out of RefNet?", f"""<form method="post" action="{html.escape(action)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}"><p><button type="submit">Sign out</button></p></form>"""),
                             registry, csrf=csrf)
    answer = await registry.sign_in.end_session(_prepared(request, query), session_token)
    if answer is not None and answer.location is not None:
        return _with_cookies(RedirectResponse(answer.location, status_code=302, headers=NO_STORE), registry,
                             clear_session=True)
    if answer is not None and answer.status >= 400:
        return _with_cookies(_answer(answer, request), registry, clear_session=True)
    return _with_cookies(_page("Signed out", "<p>You are signed out of RefNet.</p>"), registry, clear_session=True)


# --- enrolment (the one-time link) ----------------------------------------------------------------------------


def _enrol_form(invite: str, csrf: str, login: str, agency: str, secret: str | None, uri: str | None,
                message: str | None = None, status: int = 200) -> HTMLResponse:
    totp = ""
    if secret:
        totp = f"""<p>Add this second factor to your authenticator app (TOTP, 6 digits, 30 seconds):</p>
<p><code id="totp-secret">{html.escape(secret)}</code></p><p><code id="totp-uri">{html.escape(uri or "")}</code></p>
<p><label>The code it shows now <input name="code" inputmode="numeric" pattern="[0-9]{{6}}" required
autocomplete="one-time-code"></label></p>"""
    return _page("Set up your RefNet sign-in", _message(message) + f"""
<p>Login <strong>{html.escape(login)}</strong> at {html.escape(agency)}.</p>
<form method="post" action="/staff/enrol">
<input type="hidden" name="csrf" value="{html.escape(csrf)}">
<input type="hidden" name="invite" value="{html.escape(invite)}">
<p><label>New password (at least {domain.MIN_PASSWORD_LENGTH} characters, not containing your login)
<input name="password" type="password" required autocomplete="new-password"></label></p>
{totp}<p><button type="submit">Save</button></p></form>""", status)


_ENROL_FORM = {"requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "description": "The enrolment form (the page's own form posts it).",
    "properties": {
        "csrf": {"type": "string", "description": "The form's CSRF token (it matches a cookie).",
                 "examples": ["q1w2e3r4t5y6u7i8o9p0"]},
        "invite": {"type": "string", "description": "The one-time link's token.", "examples": ["Zm9vYmFy..."]},
        "password": {"type": "string", "description": "The new password.", "examples": ["(a new password)"]},
        "code": {"type": "string", "description": "The first code of the new second factor.",
                 "examples": ["123456"]},
    }}}}}}


@_get_and_post("/staff/enrol", "enrol", response_class=HTMLResponse,
                  summary="A one-time link's page: set a password and enrol the second factor",
                  responses={200: {"description": "The enrolment form, or done.", **_HTML},
                             404: {"description": "The link was used, has expired or was replaced.", **_HTML},
                             400: {"description": "The form has expired (the form again), or the body is not a "
                                                  "form (a problem).", **_HTML_OR_PROBLEM},
                             422: {"description": "The password or the code is not acceptable (the form again), "
                                                  "or a parameter is not valid (a problem).", **_HTML_OR_PROBLEM}},
                  openapi_extra=_ENROL_FORM)
async def enrol(request: Request, registry: Registry,
                invite: Annotated[Line | None, _q("The one-time link's token.", "Zm9vYmFy...")] = None) -> Response:
    staff = registry.staff
    csrf = _csrf(request)
    form: dict[str, str] = {}
    if request.method == "POST":
        form = await _form(request)
        invite = form.get("invite")
    token = invite or ""
    try:
        view = await staff.enrolment(token)
    except Problem as problem:
        return _page("This link cannot be used", _message(problem.detail), problem.status)
    if request.method == "GET":
        return _with_cookies(_enrol_form(token, csrf, view.login, view.agency_name, view.totp_secret, view.totp_uri),
                             registry, csrf=csrf)
    if not _csrf_ok(request, form):
        return _with_cookies(_enrol_form(token, csrf, view.login, view.agency_name, view.totp_secret, view.totp_uri,
                                         "The form has expired; please try again.", 400), registry, csrf=csrf)
    try:
        await staff.enrol(token, form.get("password", ""), form.get("code"))
    except Problem as problem:
        errors = problem.extensions.get("errors") or []
        reason = "; ".join(str(e.get("msg")) for e in errors) or problem.detail
        return _enrol_form(token, csrf, view.login, view.agency_name, view.totp_secret, view.totp_uri, reason,
                           problem.status)
    return _page("Your sign-in is ready", "<p id=\"done\">You can now sign in to RefNet with your agency, login, "
                                          "password and authenticator app.</p>")
