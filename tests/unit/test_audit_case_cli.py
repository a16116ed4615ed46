"""``refnet audit case``: an unknown id is not "nobody read it", the tables fit 80 columns, the help explains
``basis``. The audit service is played by ``httpx.MockTransport``; tests/integration/audit/test_cli.py runs the
command against the real service."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from deploy.commands import audit as audit_cli
from deploy.launcher.cli import app as refnet_cli

CASE = "case-" + "9f" * 16
CONSENT = "con_" + "7a" * 16
ENTRY = {"index": 3, "recorded_at": "2026-12-03T10:00:01.123456Z", "occurred_at": "2026-12-03T10:00:00.654321Z",
         "action": "consent.grant", "outcome": "success", "agency": "agy_iom", "client_id": "cli_iom",
         "acting_user": "demo.iom.caseworker", "purpose": None, "resource_type": "Consent", "resource_id": CONSENT,
         "case_id": CASE, "source_service": "intake", "event_id": "e" * 36,
         "details": {"consent_version": 1, "data_categories": "identity,demographics,protection_needs"}}
CREATED = {"index": 2, "occurred_at": "2026-12-03T09:59:59.000001Z", "recorded_at": "2026-12-03T10:00:00.5Z",
           "action": "case.create", "outcome": "success", "agency": "agy_iom", "client_id": "cli_iom",
           "acting_user": "demo.iom.caseworker", "purpose": "case_management",
           "data_categories": None, "consent": {"consent_id": None, "consent_version": None, "basis": "none"}}
READ = {"index": 9, "occurred_at": "2026-12-03T10:05:00.000001Z", "recorded_at": "2026-12-03T10:05:01.5Z",
        "action": "case.read", "outcome": "success", "agency": "agy_referral_service_long_name",
        "client_id": "cli_unhcr", "acting_user": "a.very.long.acting.user.name@unhcr.example.org",
        "purpose": "family_tracing", "data_categories": ["identity", "demographics", "protection_needs",
                                                         "trafficking_experience"],
        "consent": {"consent_id": CONSENT, "consent_version": 12, "basis": "recorded"}}
DENIED = READ | {"index": 8, "action": "access.denied", "outcome": "denied", "consent": {
    "consent_id": None, "consent_version": None, "basis": "none"}}


def audit_service(entries: list[dict[str, Any]], access: list[dict[str, Any]]) -> Callable[[httpx.Request],
                                                                                             httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/audit/entries":
            case_id = request.url.params["case_id"]
            if not case_id.replace("-", "").replace("_", "").isalnum():
                return httpx.Response(422, json={"type": "urn:refnet:problem:validation", "title": "Unprocessable",
                                                 "status": 422, "detail": "case_id: string does not match"})
            return httpx.Response(200, json={"items": [e for e in entries if e["case_id"] == case_id][:1],
                                             "next_cursor": None})
        if path.endswith("/access"):
            return httpx.Response(200, json={"case_id": CASE, "items": access, "next_cursor": None})
        if path.endswith("/consents"):
            return httpx.Response(200, json={"case_id": CASE, "next_cursor": None, "items": [
                {k: v for k, v in e.items() if k not in ("case_id", "source_service")} for e in entries]})
        return httpx.Response(404)

    return answer


def invoke(monkeypatch: pytest.MonkeyPatch, answer: Callable[[httpx.Request], httpx.Response],
           *args: str) -> Any:
    monkeypatch.setattr(httpx, "AsyncClient", functools.partial(httpx.AsyncClient,
                                                                transport=httpx.MockTransport(answer)))
    monkeypatch.setattr(audit_cli, "console", Console(width=80, force_terminal=False))
    return CliRunner().invoke(refnet_cli, ["audit", "case", *args, "--url", "http://audit.test", "--token", "t"],
                              env={"COLUMNS": "80"})


@pytest.mark.parametrize("case_id", ["case-" + "0d" * 16, "ref_1234", "not a case id"])
def test_an_id_the_log_does_not_know_is_no_such_case_and_fails(monkeypatch: pytest.MonkeyPatch,
                                                                case_id: str) -> None:
    shown = invoke(monkeypatch, audit_service([ENTRY], [CREATED]), case_id)
    assert shown.exit_code == 1, shown.output
    assert shown.output.strip().count("\n") == 0, shown.output  # one line
    assert "no case" in shown.output and "in the audit log" in shown.output
    assert "who saw" not in shown.output


def test_a_case_nobody_read_says_so_and_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = invoke(monkeypatch, audit_service([ENTRY], [CREATED, DENIED]), CASE)
    assert shown.exit_code == 0, shown.output
    assert f"Nobody has read case {CASE} (1 refused attempt(s) to read it)" in " ".join(shown.output.split())

    read = invoke(monkeypatch, audit_service([ENTRY], [CREATED, READ]), CASE)
    assert read.exit_code == 0, read.output
    assert "1 read(s) of case" in read.output and "Nobody" not in read.output


def test_the_tables_fit_80_columns_without_cutting_a_value() -> None:
    history = {"case_id": CASE, "access": [CREATED, READ, DENIED],
               "consents": [{k: v for k, v in ENTRY.items() if k not in ("case_id", "source_service")}]}
    columns: list[str] = []
    for table in audit_cli.case_tables(history):
        console = Console(width=80, record=True, force_terminal=False)
        console.print(table)
        text = console.export_text()
        assert "…" not in text
        assert max(len(line) for line in text.splitlines()) <= 80
        # Long values are folded onto more lines, never cut: every character of each is there, column by column.
        columns += ["".join(cell) for cell in zip(*(
            [part.strip() for part in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")),
            strict=True)]
    for value in ("2026-12-03", "10:05:00", "agy_referral_service_long_name", "family_tracing", CONSENT,
                  "trafficking_experience", "a.very.long.acting.user.name@unhcr.example.org", "basis:recorded",
                  "data_categories=identity,demographics,protection_needs"):
        assert any(value in column for column in columns), value


def test_the_help_explains_every_basis() -> None:
    shown = CliRunner().invoke(refnet_cli, ["audit", "case", "--help"], env={"COLUMNS": "80"})
    assert shown.exit_code == 0
    text = " ".join(shown.output.split())
    for basis in ("recorded", "log", "override", "none"):
        assert f"{basis}: " in text
    assert "risk-to-life override" in text and "named the consent" in text
