"""The sign-in forms let their answer go back to the client: a browser holds the redirects that follow a form's
submission to the page's CSP form-action, so with 'self' alone Chromium stopped the code on its way to the console
(found by the console's browser flow, issue #21). Only the client's registered redirect URI's origin is added."""

from __future__ import annotations

from tests.integration.registry.conftest import Registry
from tests.integration.registry.people_support import (
    authorize_url,
    browser,
    ensure_console,
    new_person,
    password_step,
    pkce,
)


def form_action_of(policy: str) -> list[str]:
    for directive in policy.split(";"):
        name, *sources = directive.split()
        if name == "form-action":
            return sources
    raise AssertionError(f"no form-action in {policy!r}")


async def test_the_forms_may_send_their_answer_to_the_clients_redirect_uri_only(registry: Registry) -> None:
    await ensure_console(registry)
    platform = await registry.agency(["admin", "registry:read"], kind="platform", name="Operator")
    admin = await registry.headers(platform)
    person = await new_person(registry, admin, await registry.agency(["registry:read", "cases:read"]))
    _, challenge = pkce()
    async with browser(registry) as http:
        first = await http.get(authorize_url(challenge))
        assert first.status_code == 200 and 'name="password"' in first.text
        assert form_action_of(first.headers["content-security-policy"]) == ["'self'", "http://127.0.0.1:8005"]
        second = await password_step(http, authorize_url(challenge), person)
        assert second.status_code == 200 and 'name="code"' in second.text
        assert form_action_of(second.headers["content-security-policy"]) == ["'self'", "http://127.0.0.1:8005"]
        # A request the registry refuses (an unregistered redirect URI) names no other origin.
        refused = await http.get(authorize_url(challenge, redirect_uri="http://127.0.0.1:9999/elsewhere"),
                                 headers={"Accept": "text/html"})  # a browser: the refusal as a page
        assert refused.status_code == 400
        assert form_action_of(refused.headers["content-security-policy"]) == ["'self'"]
