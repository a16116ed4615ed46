"""One fingerprint for Idempotency-Key replays: the same request matches whatever its key order, another does
not, and fingerprints stored before RFC 8785 canonicalisation still match (a retry that spans an upgrade)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

from shared import idempotency

KEY = secrets.token_bytes(32)
PURPOSE = b"refnet-referral-request"
REQUEST = {"case_id": "case_1", "reason": "Needs a safe place", "shared_categories": ["identity", "contact"],
           "priority": "urgent"}


def test_the_same_request_matches_in_any_key_order() -> None:
    stored = idempotency.fingerprint(KEY, PURPOSE, REQUEST)
    assert idempotency.same_request(stored, KEY, PURPOSE, dict(reversed(list(REQUEST.items()))))


def test_another_request_another_key_or_purpose_does_not() -> None:
    stored = idempotency.fingerprint(KEY, PURPOSE, REQUEST)
    assert not idempotency.same_request(stored, KEY, PURPOSE, REQUEST | {"priority": "routine"})
    assert not idempotency.same_request(stored, secrets.token_bytes(32), PURPOSE, REQUEST)
    assert not idempotency.same_request(stored, KEY, b"refnet-intake-registration", REQUEST)
    assert not idempotency.same_request(None, KEY, PURPOSE, REQUEST)


def test_fingerprints_stored_before_rfc_8785_still_match() -> None:
    referral_then = hmac.new(KEY, PURPOSE + b"\x00" + json.dumps(REQUEST, sort_keys=True).encode(),
                             hashlib.sha256).digest()
    intake_then = hmac.new(KEY, PURPOSE + b"\x00" + json.dumps(REQUEST, sort_keys=True, separators=(",", ":"))
                           .encode(), hashlib.sha256).digest()
    assert idempotency.same_request(referral_then, KEY, PURPOSE, REQUEST)
    assert idempotency.same_request(intake_then, KEY, PURPOSE, REQUEST)


def test_a_reused_key_is_one_refusal_naming_the_header() -> None:
    problem = idempotency.key_reused()
    assert (problem.status, problem.slug) == (422, "idempotency-key-reused")
    assert problem.extensions["errors"] == [{"loc": ["header", "Idempotency-Key"],
                                             "msg": "used for a different request"}]
