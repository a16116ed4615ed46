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


async def case_history(http: httpx.AsyncClient, url: str, token: str, case_id: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    access = _get_json(await http.get(f"{url}/audit/cases/{case_id}/access", headers=auth), "case access")
    consents = _get_json(await http.get(f"{url}/audit/cases/{case_id}/consents", headers=auth), "case consents")
    return {"case_id": case_id, "access": access["items"], "consents": consents["items"]}


def print_case(history: dict[str, Any]) -> None:
    reads = Table(title=f"who saw case {history['case_id']}")
    for column in ("when", "agency", "user", "action", "outcome", "purpose", "categories", "consent", "entry"):
        reads.add_column(column)
    for item in history["access"]:
        consent = item["consent"]
        label = {"recorded": "", "log": " (from log)", "override": "override", "none": "none"}[consent["basis"]]
        if consent["consent_id"]:
            label = f"{consent['consent_id']} v{consent['consent_version']}{label}"
        reads.add_row(item["occurred_at"][:19], item["agency"] or "", item["acting_user"] or "", item["action"],
                      item["outcome"], item["purpose"] or "", ", ".join(item.get("data_categories") or []),
                      label, str(item["index"]))
    console.print(reads)
    consents = Table(title="consent history")
    for column in ("when", "action", "consent", "agency", "user", "details", "entry"):
        consents.add_column(column)
    for item in history["consents"]:
        details = ", ".join(f"{k}={v}" for k, v in sorted(item["details"].items()))
        consents.add_row(item["occurred_at"][:19], item["action"], item["resource_id"] or "", item["agency"] or "",
                         item["acting_user"] or "", details, str(item["index"]))
    console.print(consents)


# --- commands -------------------------------------------------------------------------------------------

UrlOption = Annotated[str | None, typer.Option("--url", help="the audit service (default: the local stack's)")]
TokenOption = Annotated[str | None, typer.Option("--token", help="an access token with audit:read "
                                                 "(default: $REFNET_TOKEN)")]
AsOption = Annotated[str | None, typer.Option("--as", help="get a token with .refnet/credentials/<name>.json")]


def _run(make: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx.AsyncClient(timeout=30.0) as http:
            return await make(http)

    try:
        return asyncio.run(main())
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
    """Who read a case, when, why, under which consent; and its consent history."""
    base = audit_url(url)

    async def go(http: httpx.AsyncClient) -> dict[str, Any]:
        return await case_history(http, base, await resolve_token(token, as_name, http), case_id)

    history = _run(go)
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
    audit_app.command("case")(case_command)
    audit_app.command("witness")(witness_command)
    app.add_typer(audit_app, name="audit")
    keys.command("audit-checkpoint")(new_checkpoint_key)


__all__ = [
    "AuditCliError", "VerifyReport", "WitnessReport", "fetch_token", "load_checkpoint_file", "register",
    "resolve_token", "state_file", "verify", "verify_offline", "witness", "witness_identity",
]
