"""Helpers of the people tests (issue #20): invite and enrol a person over HTTP, sign in with code + PKCE."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp

from services.registry.service.people import register_client
from shared.db import unit_of_work
from tests.integration.registry.conftest import ISSUER, Client, Registry

CONSOLE = "refnet-console"
REDIRECT = "http://127.0.0.1:8005/auth/callback"
LOGGED_OUT = "http://127.0.0.1:8005/"
PASSWORD = "correct horse battery staple"


@dataclass
class Person:
    id: str
    agency: Client
    agency_ref: str
    login: str
    password: str
    totp_secret: str | None

    def code(self, steps_ahead: int = 1) -> str:
        """A TOTP code of a later time step than the one the last sign-in used (codes are good once)."""
        assert self.totp_secret is not None
        return pyotp.TOTP(self.totp_secret).at(time.time() + 30 * steps_ahead)


async def ensure_console(registry: Registry) -> None:
    async with unit_of_work(registry.sessions) as session:
        await register_client(session, CONSOLE, "RefNet console", [REDIRECT], [LOGGED_OUT])


def browser(registry: Registry) -> httpx.AsyncClient:
    """A user agent of its own (its own cookies) on the same in-process registry."""
    return httpx.AsyncClient(transport=registry.http._transport, base_url=ISSUER)


def field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} field in the page"
    return match.group(1)


def form_action(page: str) -> str:
    match = re.search(r'<form method="post" action="([^"]*)"', page)
    assert match
    return match.group(1).replace("&amp;", "&")


async def invite(registry: Registry, admin_headers: dict[str, str], agency: Client, login: str,
                 roles: list[str]) -> dict[str, Any]:
    response = await registry.http.post(f"/agencies/{agency.agency_id}/staff", headers=admin_headers,
                                        json={"login": login, "roles": roles})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def enrol(registry: Registry, link: str, password: str = PASSWORD) -> tuple[httpx.Response, str | None]:
    """Open the link, set the password and confirm the TOTP secret it shows: (the answer, the secret)."""
    path = link.removeprefix(ISSUER)
    async with browser(registry) as http:
        page = await http.get(path)
        assert page.status_code == 200, page.text
        secret_match = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page.text)
        secret = secret_match.group(1) if secret_match else None
        data = {"csrf": field(page.text, "csrf"), "invite": field(page.text, "invite"), "password": password}
        if secret:
            data["code"] = pyotp.TOTP(secret).now()
        return await http.post("/staff/enrol", data=data), secret


async def new_person(registry: Registry, admin_headers: dict[str, str], agency: Client,
                     roles: list[str] | None = None) -> Person:
    login = "p-" + secrets.token_hex(4)
    invited = await invite(registry, admin_headers, agency, login, roles or ["caseworker"])
    done, secret = await enrol(registry, invited["link"])
    assert done.status_code == 200 and 'id="done"' in done.text, done.text
    return Person(invited["person"]["id"], agency, agency.agency_id, login, PASSWORD, secret)


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return result


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(challenge: str | None, *, method: str | None = "S256", redirect_uri: str = REDIRECT,
                  **extra: str) -> str:
    params = {"response_type": "code", "client_id": CONSOLE, "redirect_uri": redirect_uri, "scope": "openid",
              "state": "st-" + secrets.token_hex(4), "nonce": "n-" + secrets.token_hex(4)}
    if challenge is not None:
        params["code_challenge"] = challenge
    if method is not None:
        params["code_challenge_method"] = method
    params.update(extra)
    return "/oauth/authorize?" + urlencode(params)


async def password_step(http: httpx.AsyncClient, url: str, person: Person,
                        password: str | None = None) -> httpx.Response:
    page = await http.get(url)
    assert page.status_code == 200, page.text
    return await http.post(form_action(page.text), data={
        "csrf": field(page.text, "csrf"), "step": "password", "agency": person.agency_ref, "login": person.login,
        "password": password if password is not None else person.password})


async def code_step(http: httpx.AsyncClient, page: httpx.Response, code: str) -> httpx.Response:
    return await http.post(form_action(page.text), data={"csrf": field(page.text, "csrf"), "step": "otp",
                                                         "code": code})


def code_of(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT), location
    query = parse_qs(urlsplit(location).query)
    assert "code" in query, location
    return query["code"][0]


async def sign_in(http: httpx.AsyncClient, person: Person, challenge: str, steps_ahead: int = 1) -> str:
    """The whole sign-in: password, then the TOTP code; the authorization code."""
    page = await password_step(http, authorize_url(challenge), person)
    if person.totp_secret is not None:
        assert page.status_code == 200 and 'name="code"' in page.text, page.text
        page = await code_step(http, page, person.code(steps_ahead))
    return code_of(page)


async def exchange(registry: Registry, code: str, verifier: str | None, redirect_uri: str = REDIRECT) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": CONSOLE}
    if verifier is not None:
        data["code_verifier"] = verifier
    return await registry.http.post("/oauth/token", data=data)


async def refresh(registry: Registry, token: str) -> httpx.Response:
    return await registry.http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                                          "client_id": CONSOLE})
