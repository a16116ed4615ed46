"""The console's sign-in and the safety every page has: server-side sessions with sealed tokens, the
session-bound CSRF token, the headers (CSP, no-store, cookie flags), idle expiry, the quick exit."""

from __future__ import annotations

import hashlib
import html
import re
from datetime import UTC, datetime, timedelta

from tests.integration.console.conftest import COOKIE, Console, cookie_of, query_of

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")


async def test_sign_in_is_code_with_pkce_and_the_tokens_stay_on_the_server(console: Console) -> None:
    started = await console.get("/auth/login")
    assert started.status_code == 303
    asked = query_of(started.headers["location"])
    assert asked["code_challenge_method"] == ["S256"] and asked["code_challenge"][0]
    assert asked["response_type"] == ["code"] and "openid" in asked["scope"][0].split()
    assert asked["state"][0] and asked["nonce"][0]
    assert asked["prompt"] == ["login"]  # a shared computer: never the previous person's sign-in at the provider
    session = await console.sign_in()
    # The cookie: HttpOnly, Secure, SameSite=Lax; only an opaque id, no token.
    answer = await console.get("/inbox", session=session)
    assert answer.status_code == 200
    stored = console.sql("SELECT key, encode(sealed, 'hex'), person FROM console_sessions WHERE state = 'signed_in'")
    key, sealed, person = stored.strip().split("|", 2)
    assert key == hashlib.sha256(session.encode()).hexdigest()  # the id itself is not stored
    assert person == "person-1"
    assert b"eyJ".hex() not in sealed  # no JWT in the clear: sealed under the KEK
    # The API saw the person's own token.
    assert ("GET", "/referrals", "person-1", None) in console.network.api_calls


async def test_the_session_cookie_is_httponly_secure_and_lax(console: Console) -> None:
    started = await console.get("/auth/login")
    header = next(h for h in started.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    flags = {part.strip().lower() for part in header.split(";")[1:]}
    assert "httponly" in flags and "secure" in flags and "samesite=lax" in flags and "path=/" in flags


async def test_a_callback_without_its_sign_in_is_refused(console: Console) -> None:
    started = await console.get("/auth/login")
    pending = cookie_of(started)
    state = query_of(started.headers["location"])["state"][0]
    # An answer with a state of another sign-in (login CSRF): refused, no session.
    answer = await console.get(f"/auth/callback?code=x&state=not-{state}", session=pending)
    assert answer.status_code == 400
    assert console.sql("SELECT count(*) FROM console_sessions").strip() == "0"
    # No cookie at all: refused.
    assert (await console.get(f"/auth/callback?code=x&state={state}")).status_code == 400


async def test_every_page_has_the_strict_csp_and_no_store(console: Console) -> None:
    session = await console.sign_in()
    for path, who in [("/signin", None), ("/inbox", session), ("/neutral", None), ("/nowhere", session)]:
        answer = await console.get(path, session=who)
        assert answer.headers["content-security-policy"] == CSP, path
        assert answer.headers["cache-control"] == "no-store", path
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
    static = await console.get("/static/console.css")
    assert static.status_code == 200 and "no-store" not in static.headers["cache-control"]


async def test_pages_carry_no_inline_script_or_style(console: Console) -> None:
    session = await console.sign_in()
    for path in ("/signin", "/inbox", "/inbox?role=sent", "/cases/new"):
        html = (await console.get(path, session=session)).text
        assert "<script>" not in html and " style=" not in html and "<style" not in html, path
        assert "onclick" not in html.lower(), path


async def test_a_form_without_the_session_token_is_refused(console: Console) -> None:
    session = await console.sign_in()
    token = await console.csrf(session)
    other = await console.sign_in()
    # Missing, wrong, and another session's token: 403, and nothing done.
    for data in ({}, {"csrf": "x" * 64}, {"csrf": await console.csrf(other)}):
        answer = await console.post("/auth/logout", session, data)
        assert answer.status_code == 403, data
    assert (await console.get("/inbox", session=session)).status_code == 200
    # With its own token, the form works: out here, then at the provider (RP-initiated logout), then home.
    answer = await console.post("/auth/logout", session, {"csrf": token})
    # A page that moves on by itself (a redirect would be held to the form's form-action 'self').
    assert answer.status_code == 200
    location = html.unescape(re.search(r'content="0;url=([^"]+)"', answer.text).group(1))  # type: ignore[union-attr]
    assert f"{COOKIE}=" in answer.headers["set-cookie"] and "Max-Age=0" in answer.headers["set-cookie"]
    logout = query_of(location)
    assert location.startswith(f"{console.network.url}/logout?")
    assert logout["post_logout_redirect_uri"] == ["http://console.test/"] and logout["id_token_hint"][0]
    home = await console.get(f"/?state={logout['state'][0]}")
    assert home.status_code == 303 and home.headers["location"] == "/signin"
    assert (await console.get("/inbox", session=session)).status_code == 303  # signed out
    assert console.network.revoked  # the refresh token was revoked


async def test_a_session_idle_too_long_has_ended(console: Console) -> None:
    session = await console.sign_in()
    key = hashlib.sha256(session.encode()).hexdigest()
    idle = (datetime.now(UTC) - timedelta(minutes=16)).isoformat()
    console.sql(f"UPDATE console_sessions SET last_seen_at = '{idle}' WHERE key = '{key}'")  # noqa: S608
    answer = await console.get("/inbox", session=session)
    assert answer.status_code == 303 and answer.headers["location"] == "/signin?expired=true"
    assert console.sql(f"SELECT count(*) FROM console_sessions WHERE key = '{key}'").strip() == "0"  # noqa: S608


async def test_the_inbox_refresh_does_not_keep_a_session_alive(console: Console) -> None:
    session = await console.sign_in()
    key = hashlib.sha256(session.encode()).hexdigest()
    before = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    console.sql(f"UPDATE console_sessions SET last_seen_at = '{before}' WHERE key = '{key}'")  # noqa: S608
    assert (await console.get("/inbox/rows?role=received", session=session)).status_code == 200
    seen = console.sql(f"SELECT last_seen_at < now() - interval '9 minutes' FROM console_sessions WHERE key = '{key}'")  # noqa: S608
    assert seen.strip() == "t"
    # A page the person asks for does.
    assert (await console.get("/inbox", session=session)).status_code == 200
    seen = console.sql(f"SELECT last_seen_at > now() - interval '1 minute' FROM console_sessions WHERE key = '{key}'")  # noqa: S608
    assert seen.strip() == "t"


async def test_quick_exit_ends_the_session_and_leaves_for_a_neutral_page(console: Console) -> None:
    session = await console.sign_in()
    answer = await console.get("/exit", session=session)
    assert answer.status_code == 303 and answer.headers["location"] == "/neutral"
    assert "cookies" in answer.headers["clear-site-data"]
    assert (await console.get("/inbox", session=session)).status_code == 303
    neutral = await console.get("/neutral")
    assert "RefNet" not in neutral.text and "referral" not in neutral.text.lower()


async def test_an_expired_access_token_is_refreshed_once_with_rotation(console: Console) -> None:
    console.network.access_lifetime = 10  # within the refresh margin: every page refreshes
    session = await console.sign_in()
    assert (await console.get("/inbox", session=session)).status_code == 200
    refreshes = [r for r in console.network.token_requests if r["grant_type"] == "refresh_token"]
    assert len(refreshes) == 1
    assert (await console.get("/inbox", session=session)).status_code == 200
    refreshes = [r for r in console.network.token_requests if r["grant_type"] == "refresh_token"]
    assert len(refreshes) == 2  # each time the rotated one: a spent refresh token would be refused


async def test_a_non_party_gets_not_found_and_the_case_is_read_for_the_referral(console: Console) -> None:
    console.network.referrals["ref-1"] = {
        "id": "ref-1", "status": "requested", "case_id": "case-1", "from_agency": "agy_iom",
        "to_agency": "agy_unhcr", "service_id": None, "pathway": "protection", "service_type": None,
        "priority": "urgent", "reason": None, "shared_categories": ["identity"], "due_at": None, "overdue": False}
    console.network.person.agency = "agy_other"
    session = await console.sign_in()
    answer = await console.get("/referrals/ref-1", session=session)
    assert answer.status_code == 404
    assert "Amina" not in answer.text and "case-1" not in answer.text
    console.network.person.agency = "agy_unhcr"
    session = await console.sign_in()
    answer = await console.get("/referrals/ref-1", session=session)
    assert answer.status_code == 200 and "Amina" in answer.text
    # And in Arabic too (its history's first move has no "from": nothing to translate, not the catalog's header).
    await console.post("/language", session, {"csrf": await console.csrf(session), "language": "ar"})
    arabic = await console.get("/referrals/ref-1", session=session)
    assert arabic.status_code == 200 and 'dir="rtl"' in arabic.text and "مطلوبة" in arabic.text
    assert ("GET", "/cases/case-1", "person-1", "referral") in console.network.api_calls
    # The recipient's next moves are offered as forms, each with the session's token.
    assert 'value="received"' in answer.text and 'name="csrf"' in answer.text
    # The page's title carries no personal data.
    title = answer.text.split("<title>", 1)[1].split("</title>", 1)[0]
    assert "Amina" not in title and "case-1" not in title


async def test_register_case_shows_each_error_beside_its_field(console: Console) -> None:
    session = await console.sign_in()
    token = await console.csrf(session, "/cases/new")
    answer = await console.post("/cases", session, {"csrf": token, "given_name": "", "trafficking_status": ""})
    assert answer.status_code == 422
    assert 'id="error-given_name"' in answer.text and 'id="error-trafficking_status"' in answer.text
    assert 'aria-describedby="error-given_name"' in answer.text
    answer = await console.post("/cases", session, {"csrf": token, "given_name": "Amina",
                                                    "trafficking_status": "possible", "identified_by": "ngo"})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/cases/case-")
    # The URL carries the case id, never the name.
    assert "Amina" not in answer.headers["location"]


async def test_arabic_is_right_to_left_and_remembered_for_the_person(console: Console) -> None:
    session = await console.sign_in()
    token = await console.csrf(session)
    answer = await console.post("/language", session, {"csrf": token, "language": "ar", "back": "/inbox"})
    assert answer.status_code == 303 and answer.headers["location"] == "/inbox"
    page = await console.get("/inbox", session=session)
    assert '<html lang="ar" dir="rtl">' in page.text
    # A new sign-in of the same person: still Arabic.
    again = await console.sign_in()
    assert '<html lang="ar" dir="rtl">' in (await console.get("/inbox", session=again)).text
    # A language that is not offered: refused by name, not a 500.
    assert (await console.post("/language", session, {"csrf": token, "language": "xx"})).status_code == 400
