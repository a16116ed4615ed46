"""The console's catalogs: every message of its templates and code has a French and an Arabic translation, and
the catalogs compile (the app compiles them in memory at start: services/console/pages.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from services.console import pages

CONSOLE = Path(pages.__file__).resolve().parent


def messages_in_the_code() -> set[str]:
    found: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(CONSOLE), method_map=[("templates/**.html", "jinja2"), ("**.py", "python")],
            options_map={"templates/**.html": {"extensions": "jinja2.ext.i18n"}},
            keywords={"_": None, "gettext": None, "N_": None}):
        found.add(message[0] if isinstance(message, tuple) else message)
    return {m for m in found if m}


@pytest.mark.parametrize("language", ["fr", "ar"])
def test_every_message_is_translated(language: str) -> None:
    with (CONSOLE / "locales" / language / "LC_MESSAGES" / "console.po").open("rb") as handle:
        catalog = read_po(handle)
    translated = {m.id for m in catalog if m.id and m.string and not m.fuzzy}
    missing = sorted(messages_in_the_code() - translated)
    assert missing == [], f"untranslated in {language} (run pybabel, services/console/locales/babel.cfg): {missing}"


def test_the_catalogs_compile_and_translate() -> None:
    assert pages.translations("fr").gettext("Sign in") == "Se connecter"
    assert pages.translations("ar").gettext("Sign in") == "تسجيل الدخول"
    assert pages.translations("en").gettext("Sign in") == "Sign in"


def test_arabic_pages_are_right_to_left() -> None:
    html = pages.render("signed_out.html", "ar", {"who": None, "csrf": "", "nav": [], "languages": ("en", "ar"),
                                                   "quick_exit_url": "/neutral", "idle_seconds": 0,
                                                   "warn_seconds": 0, "refresh_seconds": 10, "errors": {},
                                                   "message": None}).body
    assert b'<html lang="ar" dir="rtl">' in html and "تم تسجيل الخروج".encode() in html


def test_values_from_the_apis_translate_and_an_empty_one_stays_empty() -> None:
    env = pages.environment("ar")
    assert env.from_string("{{ 'accepted'|t }}").render() == "مقبولة"
    # gettext("") would be the catalog's header (with a '%' that newstyle gettext fails on).
    assert env.from_string("{{ ''|t }}|{{ none|t }}").render(none=None) == "|"
    assert env.from_string("{{ 'not-a-code'|t }}").render() == "not-a-code"
