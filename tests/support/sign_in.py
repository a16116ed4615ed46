"""A person signs in at a running registry as a first-party client does it, over HTTP (issue 20): the
authorization request with PKCE (S256), the sign-in form's password step and TOTP step (each form with its CSRF
token), the code back at the client's redirect URI, and the token request with the code verifier. No key file,
no shortcut: what comes back is what the registry issues.

    tokens = sign_in(registry_url, home / "credentials" / "people" / "iom-caseworker.json")
    headers = {"Authorization": f"Bearer {tokens.access_token}"}

A TOTP code is good once at the registry (a replayed code is refused), so two sign-ins of one person within
30 s need two codes: the helper uses the next time step's code (the registry accepts one step of drift), and
waits for a fresh step when both are spent.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pyotp

#: The demo's first-party client (deploy/seed.py registers it on `make run`).
CONSOLE_CLIENT = "refnet-console"
CONSOLE_REDIRECT = "http://127.0.0.1:8005/auth/callback"

_HIDDEN = re.compile(r'<input type="hidden" name="(?P<name>[a-z]+)" value="(?P<value>[^"]*)">')
_ACTION = re.compile(r'<form method="post" action="(?P<action>[^"]*)">')
_MESSAGE = re.compile(r'<p role="alert" id="message">(?P<text>[^<]*)</p>')

# The last TOTP time step this process sent per secret: the registry takes each step once.
_steps_used: dict[str, int] = {}
_steps_lock = threading.Lock()


class SignInRefused(AssertionError):
    """A step of the flow did not answer as a successful sign-in does (the registry's words included)."""


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    id_token: str | None
    expires_in: int
    scope: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, code_challenge) for S256 (RFC 7636 4.1-4.2)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def person_file(path: Path | str) -> dict[str, Any]:
    """A person's credentials file (`.refnet/credentials/people/<login>.json`)."""
    return dict(json.loads(Path(path).read_text()))


def sign_in(registry: str, person: Path | str | dict[str, Any], *, client_id: str = CONSOLE_CLIENT,
            redirect_uri: str | None = None, scope: str = "openid", timeout: float = 30) -> Tokens:
    """Code + PKCE + TOTP for ``person`` (a credentials file or its content: agency, login, password,
    totp_secret) at ``registry``; the tokens of the code's exchange. The redirect is the console's of the
    person's stack (their file's ``console``), as the stack registered it."""
    who = person if isinstance(person, dict) else person_file(person)
    if redirect_uri is None:
        redirect_uri = f"{who['console']}/auth/callback" if "console" in who else CONSOLE_REDIRECT
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with httpx.Client(base_url=registry, timeout=timeout, follow_redirects=False) as http:
        page = http.get("/oauth/authorize", params={
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
            "state": state, "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"})
        _expect(page, 200, "the sign-in form")
        page = _post_form(http, page, {"step": "password", "agency": who["agency"], "login": who["login"],
                                       "password": who["password"]})
        _expect(page, 200, "the second-factor form")
        answer = _second_factor(http, page, str(who["totp_secret"]))
        _expect(answer, 302, "the redirect back to the client")
        location = answer.headers["location"]
        if not location.startswith(redirect_uri + "?"):
            raise SignInRefused(f"redirected to {location.split('?')[0]!r}, not the client's redirect URI")
        query = parse_qs(urlsplit(location).query)
        if query.get("state") != [state] or "code" not in query:
            raise SignInRefused(f"the redirect carries no code for this request: {sorted(query)}")
        token = http.post("/oauth/token", data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect_uri,
            "client_id": client_id, "code_verifier": verifier})
    _expect(token, 200, "the token exchange")
    return _tokens(token.json())


def refresh(registry: str, refresh_token: str, *, client_id: str = CONSOLE_CLIENT, timeout: float = 30) -> Tokens:
    """The refresh token grant (the registry rotates: the answer holds a new refresh token)."""
    answer = httpx.post(registry.rstrip("/") + "/oauth/token", timeout=timeout, data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id})
    _expect(answer, 200, "the refresh")
    return _tokens(answer.json())


def _tokens(body: dict[str, Any]) -> Tokens:
    return Tokens(access_token=body["access_token"], refresh_token=body["refresh_token"],
                  id_token=body.get("id_token"), expires_in=int(body["expires_in"]), scope=body["scope"])


def _expect(answer: httpx.Response, status: int, what: str) -> None:
    if answer.status_code != status:
        message = _MESSAGE.search(answer.text)
        said = html.unescape(message["text"]) if message else answer.text[:300]
        raise SignInRefused(f"{what}: {answer.status_code} instead of {status}: {said}")


def _post_form(http: httpx.Client, page: httpx.Response, fields: dict[str, str]) -> httpx.Response:
    """Submit the page's form: its action, its hidden fields (the CSRF token) and ``fields``."""
    action = _ACTION.search(page.text)
    if action is None:
        raise SignInRefused("the page holds no form")
    hidden = {m["name"]: html.unescape(m["value"]) for m in _HIDDEN.finditer(page.text)}
    target = urljoin(str(page.url), html.unescape(action["action"]))
    return http.post(target, data={**hidden, **fields})


def _second_factor(http: httpx.Client, page: httpx.Response, secret: str) -> httpx.Response:
    totp = pyotp.TOTP(secret)
    for _ in range(3):
        step = next_totp_step(totp, secret)
        answer = _post_form(http, page, {"step": "otp", "code": totp.at(step * totp.interval)})
        if answer.status_code != 401:
            return answer
        page = answer  # a code another sign-in spent (the registry remembers the last step it took): the next one
    return answer


def mark_spent(secret: str, step: int) -> None:
    """The registry took ``secret``'s code of time step ``step`` elsewhere (an enrolment): sign in with a later one."""
    with _steps_lock:
        _steps_used[secret] = max(step, _steps_used.get(secret, step))


def next_totp_step(totp: pyotp.TOTP, secret: str) -> int:
    """A time step not sent before by this process: this one, the next (within the registry's drift
    window), or else wait for a new one."""
    while True:
        now = time.time()
        current = int(now // totp.interval)
        with _steps_lock:
            step = max(current, _steps_used.get(secret, current - 1) + 1)
            if step <= current + 1:
                _steps_used[secret] = step
                return step
        time.sleep((current + 1) * totp.interval - now + 0.05)
