"""Rendering pages: Jinja2 templates, one environment per language with its gettext catalog (Babel), and the
headers every answer carries (CSP, no-store, framing, referrer).

Catalogs are the ``.po`` files in ``locales/``, compiled in memory when the app is built (Babel's own
``read_po``/``write_mo``): no compiled ``.mo`` in the repository and no build step that could leave one stale.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console import domain

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
LOCALES = HERE / "locales"
DOMAIN = "console"

#: No inline script or style anywhere: every script and stylesheet is a file of ``static/``.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def translations(language: str) -> NullTranslations:
    po = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po.exists():
        return NullTranslations()
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=language, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


@cache
def environment(language: str) -> Environment:
    # Jinja's lenient Undefined: a field an API's answer leaves out is shown empty, not a page that fails.
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    catalog = translations(language)
    env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
    # A value from an API (a status, a reason code) translated: `{{ code|t }}`. Not `_()`: gettext("") is the
    # catalog's header, and newstyle gettext %-formats what it returns.
    env.filters["t"] = lambda value: catalog.gettext(str(value)) if value else ""
    return env


def gettext(language: str, message: str) -> str:
    """One message in ``language`` (for texts chosen in code, e.g. a refusal's wording)."""
    return translations_cached(language).gettext(message)


@cache
def translations_cached(language: str) -> NullTranslations:
    return translations(language)


def render(template: str, language: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    html = environment(language).get_template(template).render(
        lang=language, dir=domain.direction(language), **context)
    return HTMLResponse(html, status_code=status)


class SecurityHeaders:
    """Every answer: the CSP and its companions; and ``Cache-Control: no-store`` on everything but the static
    files (pages carry personal data, and a shared computer's cache must not keep them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in (b"cache-control", b"pragma")]
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                if static:
                    headers.append((b"cache-control", b"public, max-age=3600"))
                else:
                    headers += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
