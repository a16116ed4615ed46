"""``refnet audit witness``: an independent party cosigns the checkpoints it has checked."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.commands.audit.client import AuditCliError
from deploy.commands.audit.verify import Check, Checked, VerifyReport, _check_consistency, _get_json
from services.audit.domain import parse_checkpoint_body
from services.audit.signing import (
    VerifierKey,
    cosign,
    generate_key_file,
    load_key_file,
    parse_vkey,
    raw_public,
    verify_signature,
)

# --- witness ---------------------------------------------------------------------------------------------

WITNESS_KEY_FILE = "witness-ed25519.pem"
WITNESS_SCOPE = "audit:witness"


@dataclass
class WitnessReport(Checked):
    url: str
    vkey: str
    checks: list[Check] = field(default_factory=list)
    cosigned: int | None = None  # the tree size cosigned this time


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
