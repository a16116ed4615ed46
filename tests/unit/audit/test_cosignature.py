"""C2SP verifier keys and tlog-cosignature/v1 lines, as signing.py writes and reads them."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit.signing import (
    CheckpointSigner,
    LogKeys,
    VerifierKey,
    cosign,
    cosigned_message,
    log_vkey,
    parse_signature_line,
    parse_vkey,
    raw_public,
    verify_cosignature,
)

BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def test_the_signed_message_is_the_spec_s() -> None:
    assert cosigned_message(BODY, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")


def test_a_cosignature_line_verifies_with_its_key_only() -> None:
    private = Ed25519PrivateKey.generate()
    public = raw_public(private.public_key())
    key = VerifierKey("witness.example.com/w1", "witness", public)
    assert key.key_id == hashlib.sha256(b"witness.example.com/w1\n\x04" + public).digest()[:4]
    line = cosign(private, key.name, BODY, 1679315147)
    parsed = parse_signature_line(line)
    assert parsed.name == key.name and parsed.key_id == key.key_id and len(parsed.payload) == 72
    assert parsed.payload[:8] == (1679315147).to_bytes(8, "big")
    assert verify_cosignature(key, BODY, parsed) == 1679315147
    assert verify_cosignature(key, BODY.replace("20852163", "20852164"), parsed) is None
    other = VerifierKey(key.name, "witness", raw_public(Ed25519PrivateKey.generate().public_key()))
    assert verify_cosignature(other, BODY, parsed) is None
    assert verify_cosignature(VerifierKey(key.name, "log", public), BODY, parsed) is None


def test_verifier_keys_round_trip_and_refuse_what_is_not_one() -> None:
    for _ in range(20):  # base64 key material often holds "+"
        key = VerifierKey("w.example/1", "witness", raw_public(Ed25519PrivateKey.generate().public_key()))
        assert parse_vkey(key.text()) == key
    good = key.text()
    name, key_id, material = good.split("+", 2)
    for bad in ("", "x+y", f"{name}+00000000+{material}", f"{name}+{key_id}+{material[:-4]}",
                f"{name}+{key_id}+" + base64.b64encode(b"\x02" + key.public_key).decode()):
        with pytest.raises(ValueError):
            parse_vkey(bad)


def test_the_log_trusts_its_configured_keys_only() -> None:
    old = CheckpointSigner(Ed25519PrivateKey.generate(), "refnet.local/audit")
    new = CheckpointSigner(Ed25519PrivateKey.generate(), "refnet.local/audit")
    stranger = CheckpointSigner(Ed25519PrivateKey.generate(), "refnet.local/audit")
    keys = LogKeys.of(new, [log_vkey(old.origin, old.public_key).text()])
    for signer, trusted in ((old, True), (new, True), (stranger, False)):
        assert keys.verify(signer.origin, signer.key_id, BODY, signer.sign(BODY)) is trusted
    assert not keys.verify("elsewhere", new.key_id, BODY, new.sign(BODY))
    with pytest.raises(ValueError):
        LogKeys.of(new, [VerifierKey("refnet.local/audit", "witness", old.public_key).text()])
