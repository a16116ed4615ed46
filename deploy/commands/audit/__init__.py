"""``refnet audit``: what an auditor runs on their own machine.

``refnet audit verify`` fetches the log's signed checkpoint, checks its Ed25519 signature against the
log's public key (pinned on first use), and checks that it extends the last checkpoint this machine saw
(an RFC 9162 consistency proof); only then does it remember the new one. ``refnet audit case <id>`` shows
who read a case, why, under which consent, and the case's consent history.

Authentication: ``--token`` (or ``REFNET_TOKEN``), or ``--as <name>`` to obtain a token with the
credentials the launcher wrote to ``.refnet/credentials/<name>.json`` (client credentials grant,
``private_key_jwt`` client authentication, RFC 7523).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from deploy.commands.audit.client import (
    AuditCliError,
    T,
    audit_url,
    console,
    fetch_token,
    load_credentials,
    refnet_home,
    resolve_token,
)
from deploy.commands.audit.verify import (
    VerifyReport,
    _get_json,
    load_checkpoint_file,
    print_verify,
    state_file,
    verify,
    verify_offline,
)
from deploy.commands.audit.witness import WITNESS_SCOPE, WitnessReport, witness, witness_identity
from services.audit.signing import (
    generate_key_file,
    load_key_file,
    raw_public,
)

# --- case -----------------------------------------------------------------------------------------------

#: What the ``basis`` of a read means (services/audit/domain.py, ``consents_in_force``): the help and the table say it.
BASIS = {
    "recorded": "the reading service named the consent it decided on (the strongest evidence)",
    "log": "no consent named by the reader; the consent in force then, replayed from the log's consent entries",
    "override": "no consent: a risk-to-life override (second approver) disclosed the case to the reader's agency",
    "none": "neither a consent nor an override in the log at that moment -- look into it",
}


CASE_HELP = "\n\n".join([
    "Who read a case, when, why, under which consent; and its consent history.",
    "Exit 0 for a case of the log, also one nobody read (it says so); 1 if the log holds no entry of the id "
    "(mistyped, or not a case id); 2 if the log cannot be asked.",
    "The basis of each read, in its consent column:",
    *(f"{basis}: {meaning}." for basis, meaning in BASIS.items()),
])


class NoSuchCase(AuditCliError):
    """The log holds no entry of this id: a mistyped id, or not a case id at all."""


async def case_history(http: httpx.AsyncClient, url: str, token: str, case_id: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    # A case nobody read still has entries (its creation, its consents); an id without any is no case of the log.
    # An id the log would refuse as a case id (422) is no case of it either.
    known = await http.get(f"{url}/audit/entries", params={"case_id": case_id, "limit": 1}, headers=auth)
    if known.status_code == 422 or (known.status_code == 200 and not known.json()["items"]):
        raise NoSuchCase(f"no case {case_id!r} in the audit log: no entry names it (a mistyped id, or not a case id)")
    _get_json(known, "case entries")
    access = _get_json(await http.get(f"{url}/audit/cases/{case_id}/access", headers=auth), "case access")
    consents = _get_json(await http.get(f"{url}/audit/cases/{case_id}/consents", headers=auth), "case consents")
    return {"case_id": case_id, "access": access["items"], "consents": consents["items"]}


def is_read(item: dict[str, Any]) -> bool:
    """A read that happened: the case's data went to someone (not a refused attempt, not the owner's own write)."""
    return (item["action"] == "case.read" or item["action"].endswith(".read")) and item["outcome"] == "success"


def _when(moment: str) -> str:
    return moment[:10] + "\n" + moment[11:19]  # date over time: two short lines instead of one wide one


def case_tables(history: dict[str, Any]) -> list[Table]:
    """Narrow columns, each cell a few short lines, folded rather than cut: fits 80 columns."""
    reads = Table(title=f"who saw case {history['case_id']}", show_lines=True)
    for column in ("entry", "when (UTC)", "agency / user", "action / outcome / purpose", "categories", "consent"):
        reads.add_column(column, overflow="fold")
    for item in history["access"]:
        consent = item["consent"]
        label = f"{consent['consent_id']} v{consent['consent_version']}\n" if consent["consent_id"] else ""
        reads.add_row(str(item["index"]), _when(item["occurred_at"]),
                      f"{item['agency'] or '-'}\n{item['acting_user'] or '-'}",
                      f"{item['action']}\n{item['outcome']}\n{item['purpose'] or '-'}",
                      "\n".join(item.get("data_categories") or []) or "-", f"{label}basis: {consent['basis']}")
    consents = Table(title="consent history", show_lines=True)
    for column in ("entry", "when (UTC)", "action / consent", "agency / user", "details"):
        consents.add_column(column, overflow="fold")
    for item in history["consents"]:
        details = "\n".join(f"{k}={v}" for k, v in sorted(item["details"].items())) or "-"
        consents.add_row(str(item["index"]), _when(item["occurred_at"]),
                         f"{item['action']}\n{item['resource_id'] or '-'}",
                         f"{item['agency'] or '-'}\n{item['acting_user'] or '-'}", details)
    return [reads, consents]


def case_summary(history: dict[str, Any]) -> str:
    reads = [item for item in history["access"] if is_read(item)]
    refused = [item for item in history["access"] if item["outcome"] != "success"]
    if reads:
        agencies = sorted({str(item["agency"]) for item in reads})
        return f"{len(reads)} read(s) of case {history['case_id']}, by {', '.join(agencies)}."
    attempts = f" ({len(refused)} refused attempt(s) to read it)" if refused else ""
    return (f"Nobody has read case {history['case_id']}{attempts}: the log holds its entries (creation, consent) "
            "but no read.")


def print_case(history: dict[str, Any]) -> None:
    for table in case_tables(history):
        console.print(table)
    console.print(case_summary(history))


# --- commands -------------------------------------------------------------------------------------------

UrlOption = Annotated[str | None, typer.Option("--url", help="the audit service (default: the local stack's)")]
TokenOption = Annotated[str | None, typer.Option("--token", help="an access token with audit:read "
                                                 "(default: $REFNET_TOKEN)")]
AsOption = Annotated[str | None, typer.Option("--as", help="get a token with .refnet/credentials/<name>.json")]


def _run(make: Callable[[httpx.AsyncClient], Awaitable[T]], expected: tuple[type[AuditCliError], ...] = ()) -> T:
    """``expected``: errors the command answers itself (with its own exit code)."""
    async def main() -> T:
        async with httpx.AsyncClient(timeout=30.0) as http:
            return await make(http)

    try:
        return asyncio.run(main())
    except expected:
        raise
    except AuditCliError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the audit service: {type(exc).__name__}[/red]")
        raise typer.Exit(2) from exc


def verify_command(
    url: UrlOption = None, token: TokenOption = None, as_name: AsOption = None,
    full: Annotated[bool, typer.Option("--full", help="also have the service recompute the leaves (those "
                                       "appended since its last verification)")] = False,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="a saved checkpoint (JSON) to check against instead of the remembered one")] = None,
    database: Annotated[str | None, typer.Option(
        "--database", help="check a (restored) audit database directly, the service stopped; needs "
                           "--checkpoint or a remembered checkpoint")] = None,
    witness_key: Annotated[list[str] | None, typer.Option(
        "--witness-key", help="a witness's C2SP verifier key (name+keyid+base64); repeat for each")] = None,
    quorum: Annotated[int, typer.Option(
        "--quorum", min=0, help="check the latest checkpoint at least this many of the --witness-key cosigned")] = 0,
    previous_key: Annotated[list[str] | None, typer.Option(
        "--previous-key", help="with --database: an earlier checkpoint key of the log (C2SP verifier key), "
                               "whose checkpoints count too; repeat for each")] = None,
) -> None:
    """Check the log's signed checkpoint and that it extends the last one this machine saw."""
    base = audit_url(url)
    against = load_checkpoint_file(checkpoint) if checkpoint else None

    if database:
        path = state_file(refnet_home(), base)
        saved = against or (load_checkpoint_file(path) if path.exists() else None)
        if saved is None:
            console.print("[red]--database needs --checkpoint (or a checkpoint remembered for --url)[/red]")
            raise typer.Exit(2)
        try:
            report = asyncio.run(verify_offline(database, saved, previous_key or ()))
        except (OSError, SQLAlchemyError) as exc:
            console.print(f"[red]cannot read the audit database: {type(exc).__name__}[/red]")
            raise typer.Exit(2) from exc
        except AuditCliError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
        print_verify(report)
        if not report.ok:
            raise typer.Exit(1)
        return

    async def go(http: httpx.AsyncClient) -> VerifyReport:
        return await verify(http, base, await resolve_token(token, as_name, http), refnet_home(), full=full,
                            against=against, witness_keys=witness_key or (), quorum=quorum)

    report = _run(go)
    print_verify(report)
    if not report.ok:
        raise typer.Exit(1)


def case_command(
    case_id: Annotated[str, typer.Argument(help="the pseudonymous case id")],
    url: UrlOption = None, token: TokenOption = None, as_name: AsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Who read a case, when, why, under which consent; and its consent history (help: CASE_HELP)."""
    base = audit_url(url)

    async def go(http: httpx.AsyncClient) -> dict[str, Any]:
        return await case_history(http, base, await resolve_token(token, as_name, http), case_id)

    try:
        history = _run(go, expected=(NoSuchCase,))
    except NoSuchCase as unknown:
        console.print(f"[red]{unknown}[/red]", soft_wrap=True)  # one line, however narrow the terminal
        raise typer.Exit(1) from unknown
    if as_json:
        print(json.dumps(history, indent=2))
    else:
        print_case(history)


def new_checkpoint_key(path: Annotated[Path, typer.Argument(help="where to write the PEM (must not exist)")]
                       ) -> None:
    """Generate an Ed25519 checkpoint signing key for the audit service."""

    if path.exists():
        console.print(f"[red]{path} exists; refusing to overwrite a signing key[/red]")
        raise typer.Exit(2)
    generate_key_file(path)
    public = raw_public(load_key_file(path).public_key())
    console.print(f"wrote {path}; public key {base64.b64encode(public).decode()}")


def witness_command(
    state: Annotated[Path, typer.Option("--state", help="the witness's own directory: its key and what it saw")],
    name: Annotated[str | None, typer.Option("--name", help="the witness's name (first run only), a schema-less "
                                             "URL such as witness.ngo.example/w1")] = None,
    log_key: Annotated[str | None, typer.Option("--log-key", help="the log's verifier key, to pin it from the "
                                                "start instead of on first use")] = None,
    url: UrlOption = None, token: TokenOption = None, as_name: AsOption = None,
) -> None:
    """Witness the audit log: cosign its newest checkpoint if it extends the last one this witness saw."""
    base = audit_url(url)

    async def go(http: httpx.AsyncClient) -> WitnessReport:
        if not token and as_name:
            bearer = await fetch_token(load_credentials(as_name), http, scope=WITNESS_SCOPE)
        else:
            bearer = await resolve_token(token, None, http)
        return await witness(http, base, bearer, state, name=name, log_key=log_key)

    report = _run(go)
    table = Table(title=f"witness of {report.url}")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for check in report.checks:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAILED[/red]", check.detail)
    console.print(table)
    console.print(f"witness key (give it to the log and to auditors): {report.vkey}")
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer, keys: typer.Typer) -> None:
    audit_app = typer.Typer(help="The audit log: verify it, read a case's history.", no_args_is_help=True)
    audit_app.command("verify")(verify_command)
    audit_app.command("case", help=CASE_HELP)(case_command)
    audit_app.command("witness")(witness_command)
    app.add_typer(audit_app, name="audit")
    keys.command("audit-checkpoint")(new_checkpoint_key)


__all__ = [
    "AuditCliError", "VerifyReport", "WitnessReport", "fetch_token", "load_checkpoint_file", "register",
    "resolve_token", "state_file", "verify", "verify_offline", "witness", "witness_identity",
]
