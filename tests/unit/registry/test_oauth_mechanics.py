"""JOSE and credential mechanics: key files, secrets, the token-endpoint throttle, client JWKS checks."""

from __future__ import annotations

import json
import time

import pytest
from joserfc.jwk import ECKey, OctKey

from services.registry.oauth import (
    RateLimiter,
    generate_signing_key,
    hash_secret,
    import_public_jwks,
    read_signing_key_file,
    sign_access_token,
    signing_key_file_content,
    verify_access_token,
    verify_secret,
)


def test_key_file_round_trips_as_a_private_jwk_set_with_the_signing_key_first() -> None:
    current, previous = generate_signing_key(), generate_signing_key()
    content = signing_key_file_content([(current.kid, current.private_pem), (previous.kid, previous.private_pem)])
    keys = read_signing_key_file(content)
    assert [k.kid for k in keys] == [current.kid, previous.kid]
    assert all("d" not in k.public_jwk for k in keys)


def test_key_file_may_be_a_pem_or_the_deploy_readme_jwks() -> None:
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"}, private=True, auto_kid=True)
    from_jwks = read_signing_key_file(json.dumps({"keys": [dict(key.as_dict(private=True))]}))
    assert from_jwks[0].kid == key.kid
    from_pem = read_signing_key_file(key.as_pem(private=True).decode())
    assert from_pem[0].kid == key.thumbprint()


@pytest.mark.parametrize("content", [
    "not a key", "{}", '{"keys": []}',
    json.dumps({"keys": [dict(ECKey.generate_key("P-384", private=True).as_dict(private=True))]}),
    json.dumps({"keys": [dict(ECKey.generate_key("P-256", private=True).as_dict(private=False))]}),
])
def test_unusable_key_files_are_refused(content: str) -> None:
    with pytest.raises(ValueError):
        read_signing_key_file(content)


def test_access_tokens_verify_only_with_a_published_key() -> None:
    key, other = generate_signing_key(), generate_signing_key()
    token = sign_access_token(ECKey.import_key(key.private_pem), key.kid, {"sub": "c", "exp": int(time.time()) + 60})
    assert verify_access_token(token, [key.public_jwk]) == {"sub": "c", "exp": pytest.approx(time.time() + 60, 2)}
    assert verify_access_token(token, [other.public_jwk]) is None
    assert verify_access_token("a.b.c", [key.public_jwk]) is None


def test_secrets_are_stored_salted_and_checked_in_constant_time() -> None:
    stored = hash_secret("s3cret")
    assert "s3cret" not in stored and stored != hash_secret("s3cret")
    assert verify_secret("s3cret", stored) and not verify_secret("other", stored)
    assert not verify_secret("s3cret", None) and not verify_secret("s3cret", "garbage")


def test_client_jwks_must_be_public_asymmetric_signature_keys() -> None:
    ec = ECKey.generate_key("P-256", private=True)
    assert len(import_public_jwks({"keys": [dict(ec.as_dict(private=False))]})) == 1
    for bad in ({"keys": [dict(ec.as_dict(private=True))]}, {"keys": [dict(OctKey.generate_key(256).as_dict())]},
                {"keys": []}, {}, {"keys": [{**dict(ec.as_dict(private=False)), "use": "enc"}]}):
        with pytest.raises(ValueError):
            import_public_jwks(bad)


def test_throttle_allows_a_burst_then_refuses_per_key() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    assert limiter.retry_after() >= 1
