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
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from services.audit.domain import parse_checkpoint_body
from services.audit.merkle import verify_consistency
from services.audit.signing import (
    LogKeys,
    VerifierKey,
    cosign,
    generate_key_file,
    key_hash,
    load_key_file,
    parse_signature_line,
    parse_vkey,
    raw_public,
    verify_cosignature,
    verify_signature,
)
from shared.client_auth import TokenUnavailable, request_token

AUDIT_SCOPE = "audit:read"
DEFAULT_AUDIT_URL = "http://127.0.0.1:8004"
ASSERTION_LIFETIME_SECONDS = 120  # RFC 7523 assertions should be short-lived; the registry allows <= 5 min

console = Console()
T = TypeVar("T")


class AuditCliError(Exception):
    """Something the auditor must see, in words (no traceback)."""


# --- where things are -----------------------------------------------------------------------------------


def refnet_home() -> Path:
    """REFNET_HOME, else the repository's .refnet (where the launcher writes), else ~/.refnet."""
    if os.environ.get("REFNET_HOME"):
        return Path(os.environ["REFNET_HOME"])
    local = Path.cwd() / ".refnet"
    return local if local.is_dir() else Path.home() / ".refnet"


def audit_url(explicit: str | None) -> str:
    if explicit:
        return explicit.rstrip("/")
    if os.environ.get("REFNET_AUDIT_URL"):
        return os.environ["REFNET_AUDIT_URL"].rstrip("/")
    state = refnet_home() / "state.json"
    try:
        url = json.loads(state.read_text())["services"]["audit"]
        if isinstance(url, str) and url:
            return url.rstrip("/")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return DEFAULT_AUDIT_URL


# --- tokens ---------------------------------------------------------------------------------------------


def load_credentials(name: str) -> dict[str, Any]:
    path = refnet_home() / "credentials" / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise AuditCliError(f"no credentials named {name!r} at {path}") from exc
    except ValueError as exc:
        raise AuditCliError(f"{path} is not JSON") from exc
    missing = [k for k in ("client_id", "private_key_pem", "token_url") if not data.get(k)]
    if missing:
        raise AuditCliError(f"{path} lacks {', '.join(missing)}")
    return dict(data)


async def fetch_token(credentials: dict[str, Any], http: httpx.AsyncClient, scope: str = AUDIT_SCOPE) -> str:
    try:
        token, _ = await request_token(http, credentials, scope, assertion_lifetime=ASSERTION_LIFETIME_SECONDS,
                                       thumbprint_kid=False)
    except TokenUnavailable as exc:
        raise AuditCliError(str(exc)) from exc
    return token


async def resolve_token(token: str | None, as_name: str | None, http: httpx.AsyncClient) -> str:
    if token:
        return token
    if as_name:
        return await fetch_token(load_credentials(as_name), http)
    if os.environ.get("REFNET_TOKEN"):
        return os.environ["REFNET_TOKEN"]
    raise AuditCliError("no access token: pass --token, set REFNET_TOKEN, or use --as <credentials name>")


# --- verify ---------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    url: str
    checkpoint: dict[str, Any] | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok


def state_file(state_dir: Path, url: str) -> Path:
    """One remembered checkpoint per log (per URL: two stacks on one machine are two logs)."""
    return state_dir / "audit" / f"checkpoint-{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"


def _get_json(response: httpx.Response, what: str) -> Any:
    if response.status_code != 200:
        detail = ""
        if "json" in response.headers.get("content-type", ""):
            detail = str(response.json().get("detail", ""))
        raise AuditCliError(f"{what}: HTTP {response.status_code} {detail}".strip())
    return response.json()


async def verify(http: httpx.AsyncClient, url: str, token: str, state_dir: Path, *, full: bool = False,
                 against: dict[str, Any] | None = None, witness_keys: Sequence[str] = (), quorum: int = 0
                 ) -> VerifyReport:
    """Check the log's current checkpoint; remember it only if every check passed.

    ``against``: a saved checkpoint to require consistency with, instead of the one this machine remembers.
    ``witness_keys`` and ``quorum``: check instead the latest checkpoint at least ``quorum`` of these witnesses
    cosigned (C2SP tlog-cosignature), and require their valid cosignatures on it.
    """
    report = VerifyReport(url)
    auth = {"Authorization": f"Bearer {token}"}
    witnesses = [_witness_key(text) for text in witness_keys]
    if quorum > len(witnesses):
        raise AuditCliError(f"a quorum of {quorum} needs at least {quorum} --witness-key")
    key_doc = _get_json(await http.get(f"{url}/audit/public-key"), "public key")
    params = {"cosigned": quorum} if quorum else {}
    checkpoint = _get_json(await http.get(f"{url}/audit/checkpoint", params=params, headers=auth), "checkpoint")
    report.checkpoint = checkpoint
    path = state_file(state_dir, url)
    seen: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
    if against is not None:
        seen = {**against, "public_key": against.get("public_key") or (seen or {}).get("public_key")
                or key_doc["public_key"]}

    pinned = seen["public_key"] if seen else key_doc["public_key"]
    report.add("public key", pinned == key_doc["public_key"],  # (a saved checkpoint may name its key)
               "same key as before" if seen and pinned == key_doc["public_key"]
               else "first use: key pinned" if not seen else "THE LOG'S KEY CHANGED since the last check")
    try:
        body = parse_checkpoint_body(checkpoint["body"])
        well_formed = (body.origin == checkpoint["origin"] and body.tree_size == checkpoint["tree_size"]
                       and body.root.hex() == checkpoint["root_hash"])
    except (ValueError, KeyError):
        body, well_formed = None, False
    report.add("checkpoint text", well_formed, "C2SP tlog-checkpoint, fields agree" if well_formed
               else "the body does not say what the fields say")
    signature_ok = verify_signature(base64.b64decode(pinned), checkpoint["body"],
                                    base64.b64decode(checkpoint["signature"]))
    report.add("signature", signature_ok, "Ed25519 signature verifies" if signature_ok else "BAD SIGNATURE")
    if body is not None:
        report.add("key id", checkpoint["key_id"] == key_hash(body.origin, base64.b64decode(pinned)).hex(),
                   f"key id {checkpoint['key_id']}")
    if quorum:
        valid = _cosigners(witnesses, checkpoint)
        report.add("witnesses", len(valid) >= quorum,
                   f"{len(valid)} of the {len(witnesses)} witnesses cosigned (quorum {quorum}): {', '.join(valid)}")
    if body is not None and seen is not None:
        await _check_consistency(http, url, auth, report, seen, body.tree_size, body.root)
    elif body is not None:
        report.add("consistency", True, "no earlier checkpoint on this machine: nothing to compare")
    if full:
        result = _get_json(await http.get(f"{url}/audit/verify", headers=auth), "verify")
        report.add("server recomputation", bool(result.get("ok")),
                   "every entry matches its leaf" if result.get("ok") else
                   f"first bad index {result.get('first_bad_index')}, "
                   f"first bad checkpoint {result.get('first_bad_checkpoint')}")
    if report.ok and body is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(json.dumps({
            "url": url, "origin": body.origin, "public_key": pinned, "tree_size": body.tree_size,
            "root_hash": body.root.hex(), "body": checkpoint["body"], "signature": checkpoint["signature"],
            "seen_at": datetime.now(UTC).isoformat(),
        }, indent=2))
    return report


async def _check_consistency(http: httpx.AsyncClient, url: str, auth: dict[str, str], report: VerifyReport,
                             seen: dict[str, Any], size: int, root: bytes) -> None:
    old_size, old_root = int(seen["tree_size"]), bytes.fromhex(seen["root_hash"])
    if size < old_size:
        report.add("consistency", False, f"THE LOG SHRANK: {old_size} entries before, {size} now")
    elif size == old_size:
        report.add("consistency", root == old_root, "unchanged since the last check" if root == old_root
                   else f"THE ROOT AT SIZE {size} CHANGED since the last check")
    elif old_size == 0:
        report.add("consistency", True, f"grew from empty to {size}")
    else:
        proof = _get_json(await http.get(f"{url}/audit/proofs/consistency",
                                         params={"first": old_size, "second": size}, headers=auth),
                          "consistency proof")
        ok = verify_consistency(old_size, size, old_root, root, [bytes.fromhex(h) for h in proof["path"]])
        report.add("consistency", ok, f"extends the checkpoint of size {old_size} seen on {seen['seen_at'][:19]}"
                   if ok else f"DOES NOT EXTEND the checkpoint of size {old_size}: history was rewritten")


def _witness_key(text: str) -> VerifierKey:
    try:
        key = parse_vkey(text)
    except ValueError as exc:
        raise AuditCliError(f"--witness-key: {exc}") from exc
    if key.kind != "witness":
        raise AuditCliError("--witness-key: not a cosignature (0x04) key")
    return key


def _cosigners(witnesses: Sequence[VerifierKey], checkpoint: dict[str, Any]) -> list[str]:
    """The names of the ``witnesses`` with a valid cosignature on ``checkpoint`` (each counted once)."""
    names: list[str] = []
    for key in witnesses:
        for text in checkpoint.get("cosignatures") or []:
            try:
                line = parse_signature_line(text)
            except ValueError:
                continue
            if verify_cosignature(key, checkpoint["body"], line) is not None:
                names.append(key.name)
                break
    return names


# --- witness ---------------------------------------------------------------------------------------------

WITNESS_KEY_FILE = "witness-ed25519.pem"
WITNESS_SCOPE = "audit:witness"


@dataclass
class WitnessReport:
    url: str
    vkey: str
    checks: list[Check] = field(default_factory=list)
    cosigned: int | None = None  # the tree size cosigned this time

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok


def witness_identity(state_dir: Path, name: str | None) -> tuple[Ed25519PrivateKey, str]:
    """The witness's key and name, kept in its own directory; made on first use."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = state_dir / WITNESS_KEY_FILE
    if not key_path.exists():
        generate_key_file(key_path)
    identity = state_dir / "witness.json"
    known = json.loads(identity.read_text()) if identity.exists() else {}
    if name and known.get("name") not in (None, name):
        raise AuditCliError(f"this witness is named {known['name']}; one key, one name (C2SP tlog-cosignature)")
    chosen = name or known.get("name")
    if not chosen:
        raise AuditCliError("a new witness needs --name (a schema-less URL naming it, e.g. witness.ngo.example/w1)")
    if not known:
        identity.write_text(json.dumps({"name": chosen}))
    return load_key_file(key_path), str(chosen)


async def witness(http: httpx.AsyncClient, url: str, token: str, state_dir: Path, *, name: str | None = None,
                  log_key: str | None = None) -> WitnessReport:
    """Check the log's newest checkpoint against the last this witness saw and, only if it extends it, cosign it
    and hand the cosignature to the log.

    The witness's own storage (``state_dir``) holds its key and, per log, the log's pinned key and the largest
    checkpoint it has cosigned; it moves forward only, and is written before the cosignature leaves.
    """
    private, name = witness_identity(state_dir, name)
    report = WitnessReport(url, VerifierKey(name, "witness", raw_public(private.public_key())).text())
    auth = {"Authorization": f"Bearer {token}"}
    path = state_dir / "logs" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"
    seen: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
    key_doc = _get_json(await http.get(f"{url}/audit/public-key"), "public key")
    pinned_text = (seen or {}).get("log_key") or log_key or key_doc.get("vkey")
    try:
        pinned = parse_vkey(str(pinned_text))
    except ValueError as exc:
        raise AuditCliError(f"the log's key: {exc}") from exc
    if not report.add("log key", pinned.kind == "log", "pinned before" if seen else "given" if log_key
                      else "first use: pinned" if pinned.kind == "log" else "not a checkpoint key"):
        return report
    checkpoint = _get_json(await http.get(f"{url}/audit/checkpoint", headers=auth), "checkpoint")
    try:
        body = parse_checkpoint_body(checkpoint["body"])
    except (ValueError, KeyError) as exc:
        raise AuditCliError("the log's checkpoint is not a C2SP checkpoint") from exc
    signed = (body.origin == pinned.name and checkpoint.get("key_id") == pinned.key_id.hex()
              and verify_signature(pinned.public_key, checkpoint["body"], base64.b64decode(checkpoint["signature"])))
    if not report.add("signature", signed, "the log's pinned key signed it" if signed
                      else "NOT SIGNED BY THE LOG'S PINNED KEY"):
        return report
    if seen is not None:
        checks = VerifyReport(url)
        await _check_consistency(http, url, auth, checks, seen, body.tree_size, body.root)
        report.checks.extend(checks.checks)
        if not checks.ok:
            return report
    else:
        report.add("consistency", True, "the first checkpoint this witness sees of this log")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({
        "url": url, "log_key": pinned.text(), "tree_size": body.tree_size, "root_hash": body.root.hex(),
        "body": checkpoint["body"], "seen_at": datetime.now(UTC).isoformat()}))
    os.replace(partial, path)  # forward only, and before the cosignature leaves
    line = cosign(private, name, checkpoint["body"], int(time.time()))
    answer = await http.post(f"{url}/audit/checkpoints/{body.tree_size}/cosignatures", json={"cosignature": line},
                             headers=auth)
    report.add("cosignature", answer.status_code == 201,
               f"cosigned size {body.tree_size}" if answer.status_code == 201
               else f"the log refused the cosignature: HTTP {answer.status_code}")
    report.cosigned = body.tree_size if answer.status_code == 201 else None
    return report


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """A saved checkpoint: what GET /audit/checkpoint returned, or this tool's own remembered file."""
    try:
        data = json.loads(path.read_text())
        body = parse_checkpoint_body(data["body"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditCliError(f"{path} is not a saved checkpoint") from exc
    return {**data, "tree_size": body.tree_size, "root_hash": body.root.hex(), "origin": body.origin,
            "seen_at": data.get("seen_at") or data.get("timestamp") or "?"}


async def verify_offline(database_url: str, saved: dict[str, Any], previous_keys: Sequence[str] = ()
                         ) -> VerifyReport:
    """Before a restored audit database goes live: does it still contain the saved checkpoint?

    Reads the database directly (no service running), recomputes every leaf and the root of the first
    ``tree_size`` entries, and compares with the checkpoint, whose signature is checked with its pinned key.
    Every stored checkpoint must verify with that key or one of ``previous_keys`` (C2SP verifier keys).
    """
    from services.audit import service
    from shared.db import make_engine, make_sessionmaker

    report = VerifyReport(database_url.rsplit("@", 1)[-1])
    report.checkpoint = saved
    public = base64.b64decode(saved["public_key"]) if saved.get("public_key") else b""
    if public and saved.get("signature"):
        report.add("signature", verify_signature(public, saved["body"], base64.b64decode(saved["signature"])),
                   "the saved checkpoint's Ed25519 signature")
    engine = make_engine(database_url, pool_size=2)
    try:
        sessions = make_sessionmaker(engine)
        size = int(saved["tree_size"])
        root = await service.recomputed_root(sessions, size)
        if root is None:
            report.add("contains checkpoint", False, f"THE LOG HAS FEWER THAN {size} ENTRIES (or a hole)")
        else:
            report.add("contains checkpoint", root.hex() == saved["root_hash"],
                       f"the first {size} entries have the checkpoint's root" if root.hex() == saved["root_hash"]
                       else f"THE FIRST {size} ENTRIES DO NOT HAVE THE CHECKPOINT'S ROOT")
        origin = str(saved.get("origin") or "")
        keys = LogKeys(origin, {key_hash(origin, public).hex(): public} if public else {})
        for text in previous_keys:
            try:
                earlier = parse_vkey(text)
            except ValueError as exc:
                raise AuditCliError(f"--previous-key: {exc}") from exc
            keys.keys[earlier.key_id.hex()] = earlier.public_key
        result = await service.verify_log(sessions, keys, record=False)
        report.add("recomputation", bool(result["ok"]),
                   f"{result['tree_size']} entries match their leaves" if result["ok"] else
                   f"first bad index {result['first_bad_index']}, first bad checkpoint "
                   f"{result['first_bad_checkpoint']}")
    finally:
        await engine.dispose()
    return report


def print_verify(report: VerifyReport) -> None:
    table = Table(title=f"audit log at {report.url}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for check in report.checks:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAILED[/red]", check.detail)
    console.print(table)
    if report.checkpoint:
        cp = report.checkpoint
        when = cp.get("timestamp") or cp.get("seen_at") or "?"
        console.print(f"tree size {cp['tree_size']}, root {cp['root_hash']}, signed {when}")
    console.print("[green]the log is consistent with what this machine saw before[/green]" if report.ok
                  else "[red]the log could not be verified[/red]")


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
    from services.audit.signing import generate_key_file, load_key_file, raw_public

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
