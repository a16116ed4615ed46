"""Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): one key type, one fingerprint, one refusal.

A retry after a lost answer repeats its key and gets the first answer again; the same key with another request
is refused. Whether two requests are the same is decided by a fingerprint: an HMAC of the request's canonical
JSON (RFC 8785) under the case's own data key, so the stored fingerprint says nothing of the person and is
shredded with the key when the case is erased.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Annotated, Any

import rfc8785
from pydantic import StringConstraints

from shared.errors import Problem

HEADER = "Idempotency-Key"
#: Printable ASCII, as the draft's sf-string allows, at most 255 characters (it is stored and compared as is).
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7E]{1,255}$")]


def fingerprint(data_key: bytes, purpose: bytes, request: Any) -> bytes:
    """The request's fingerprint for ``purpose`` (a label such as ``b"refnet-referral-request"``)."""
    return hmac.new(data_key, purpose + b"\x00" + rfc8785.dumps(request), hashlib.sha256).digest()


def _legacy(data_key: bytes, purpose: bytes, request: Any, separators: tuple[str, str] | None) -> bytes:
    # Before RFC 8785: json.dumps with sorted keys (intake with compact separators, referral without).
    canonical = json.dumps(request, sort_keys=True, separators=separators).encode()
    return hmac.new(data_key, purpose + b"\x00" + canonical, hashlib.sha256).digest()


def same_request(stored: bytes | None, data_key: bytes, purpose: bytes, request: Any) -> bool:
    """Is ``request`` the one whose fingerprint was stored? Fingerprints stored before RFC 8785 still match, so a
    retry that spans an upgrade is still answered with its first result."""
    if stored is None:
        return False
    candidates = (fingerprint(data_key, purpose, request), _legacy(data_key, purpose, request, (",", ":")),
                  _legacy(data_key, purpose, request, None))
    return any(hmac.compare_digest(stored, candidate) for candidate in candidates)


def key_reused() -> Problem:
    return Problem(422, "idempotency-key-reused", "This Idempotency-Key was used for a different request.",
                   title="Unprocessable Content",
                   errors=[{"loc": ["header", HEADER], "msg": "used for a different request"}])
