"""Live people's tokens for the suites: a demo person signs in at the stack's registry over HTTP, as the console
does (issue 20) -- the authorization request with PKCE (S256), the sign-in form's password step and TOTP step
(each form with its CSRF token), the code back at the console's redirect URI, and the code exchange. What comes
back is what the registry issues, with a sign-in session behind it: the token ``/oauth/userinfo`` answers to (a
token minted with the signing key, tests/e2e/staff.py, names no signed-in person).

The demo people are ``make run``'s (deploy/seed.py): ``<agency>-caseworker`` and ``<agency>-supervisor`` in each
agency that works cases, ``oversight-auditor``; their secrets are in ``credentials/people/<login>.json``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pyotp

from tests.e2e.network import Network

CONSOLE_CLIENT = "refnet-console"
CONSOLE_REDIRECT = "http://127.0.0.1:8005/auth/callback"
_HIDDEN = re.compile(r'<input type="hidden" name="(?P<name>[a-z]+)" value="(?P<value>[^"]*)">')
_ACTION = re.compile(r'<form method="post" action="(?P<action>[^"]*)">')

#: The last TOTP time step sent per secret: the registry takes each code once.
_steps_used: dict[str, int] = {}


def demo_person(net: Network, login: str) -> dict[str, Any]:
    """A demo person's credentials file: agency, agency_id, person_id, roles, login, password, totp_secret."""
    return dict(json.loads((net.home / "credentials" / "people" / f"{login}.json").read_text()))


def signed_in_token(net: Network, login: str) -> str:
    """A live access token of demo person ``login`` (``iom-caseworker``), from a real sign-in."""
    who = demo_person(net, login)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    with httpx.Client(base_url=net.url("registry"), timeout=30, follow_redirects=False) as http:
        page = http.get("/oauth/authorize", params={
            "response_type": "code", "client_id": CONSOLE_CLIENT, "redirect_uri": CONSOLE_REDIRECT,
            "scope": "openid", "state": state, "nonce": secrets.token_urlsafe(16), "code_challenge": challenge,
            "code_challenge_method": "S256"})
        assert page.status_code == 200, f"the sign-in form: {page.status_code} {page.text[:300]}"
        page = _post_form(http, page, {"step": "password", "agency": who["agency"], "login": who["login"],
                                       "password": who["password"]})
        assert page.status_code == 200, f"the second-factor form: {page.status_code} {page.text[:300]}"
        answer = _second_factor(http, page, str(who["totp_secret"]))
        assert answer.status_code == 302, f"the redirect to the console: {answer.status_code} {answer.text[:300]}"
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        assert query.get("state") == [state] and "code" in query, sorted(query)
        token = http.post("/oauth/token", data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": CONSOLE_REDIRECT,
            "client_id": CONSOLE_CLIENT, "code_verifier": verifier})
    assert token.status_code == 200, f"the code exchange: {token.status_code} {token.text[:300]}"
    return str(token.json()["access_token"])


def _post_form(http: httpx.Client, page: httpx.Response, fields: dict[str, str]) -> httpx.Response:
    """Submit the page's form: its action, its hidden fields (the CSRF token) and ``fields``."""
    action = _ACTION.search(page.text)
    assert action is not None, "the page holds no form"
    hidden = {m["name"]: html.unescape(m["value"]) for m in _HIDDEN.finditer(page.text)}
    return http.post(urljoin(str(page.url), html.unescape(action["action"])), data={**hidden, **fields})


def _second_factor(http: httpx.Client, page: httpx.Response, secret: str) -> httpx.Response:
    """The TOTP step with a code not yet spent: the current step's, else the next one's (the registry accepts one
    step of drift), else wait for a new step."""
    totp = pyotp.TOTP(secret)
    while True:
        now = int(time.time()) // totp.interval
        step = max(now, _steps_used.get(secret, now - 1) + 1)
        if step <= now + 1:
            break
        time.sleep(totp.interval - time.time() % totp.interval + 0.1)
    _steps_used[secret] = step
    return _post_form(http, page, {"step": "otp", "code": totp.at(step * totp.interval)})
