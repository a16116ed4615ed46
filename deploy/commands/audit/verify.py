"""``refnet audit verify``: a checkpoint's signature and its consistency with the last one seen, online or
against a database copy."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from deploy.commands.audit.client import AuditCliError, console
from services.audit.domain import parse_checkpoint_body
from services.audit.merkle import verify_consistency
from services.audit.signing import (
    LogKeys,
    VerifierKey,
    key_hash,
    parse_signature_line,
    parse_vkey,
    verify_cosignature,
    verify_signature,
)

# --- verify ---------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


class Checked:
    """A report made of named checks: it passes when there are some and every one passed."""

    checks: list[Check]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok


@dataclass
class VerifyReport(Checked):
    url: str
    checkpoint: dict[str, Any] | None = None
    checks: list[Check] = field(default_factory=list)


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
