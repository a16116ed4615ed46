"""Client assertions (RFC 7523) as joserfc reads and verifies them for the registry: only the allow-listed
asymmetric algorithms, each key tried only if it fits, joserfc's header rules, one refusal (invalid_client)."""

from __future__ import annotations

import base64
import json
import warnings

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from services.registry.domain import OAuthError
from services.registry.oauth import read_unverified, verify_assertion

CLAIMS = {"iss": "cli_a", "sub": "cli_a", "aud": "http://registry.test", "exp": 2_000_000_000, "jti": "j1"}


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _verify(assertion: str, keys: list) -> dict:  # type: ignore[type-arg]
    header, claims = read_unverified(assertion)
    return verify_assertion(assertion, header, claims, keys)


def test_an_assertion_verifies_with_the_key_that_fits_among_others() -> None:
    ec, rsa, other = ECKey.generate_key("P-256", private=True), RSAKey.generate_key(2048, private=True), \
        ECKey.generate_key("P-256", private=True)
    assertion = jwt.encode({"alg": "ES256"}, CLAIMS, ec)
    assert _verify(assertion, [rsa, other, ec]) == CLAIMS
    with pytest.raises(OAuthError, match="does not verify"):
        _verify(assertion, [rsa, other])


def test_eddsa_is_accepted_without_a_warning_per_request() -> None:
    okp = OKPKey.generate_key("Ed25519", private=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the client's side: joserfc warns when signing with EdDSA
        assertion = jwt.encode({"alg": "EdDSA"}, CLAIMS, okp, algorithms=["EdDSA"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _verify(assertion, [okp]) == CLAIMS


def test_the_kid_picks_the_key() -> None:
    ec = ECKey.generate_key("P-256", private=True, auto_kid=True)
    other = ECKey.generate_key("P-256", private=True, auto_kid=True)
    assertion = jwt.encode({"alg": "ES256", "kid": other.kid}, CLAIMS, ec)  # signed by ec, names other
    with pytest.raises(OAuthError, match="does not verify"):
        _verify(assertion, [ec, other])


@pytest.mark.parametrize("header", [{"alg": "none"}, {"alg": "HS256"}, {"typ": "JWT"}, {"alg": "PS512"}])
def test_algorithms_off_the_list_are_refused_before_any_key(header: dict) -> None:  # type: ignore[type-arg]
    signed = jwt.encode({"alg": "HS256"}, CLAIMS, OctKey.import_key(b"k" * 32))
    with pytest.raises(OAuthError, match="algorithm is not accepted") as refused:
        read_unverified(_b64(header) + "." + signed.split(".")[1] + "." + signed.split(".")[2])
    assert refused.value.error == "invalid_client"


@pytest.mark.parametrize("header", [{"alg": "ES256", "crit": ["exp"], "exp": 1}, {"alg": "ES256", "kid": 5},
                                    {"alg": "ES256", "b64": True}])
def test_header_rules_joserfc_enforces_are_refused(header: dict) -> None:  # type: ignore[type-arg]
    ec = ECKey.generate_key("P-256", private=True)
    _, payload, signature = jwt.encode({"alg": "ES256"}, CLAIMS, ec).split(".")
    with pytest.raises(OAuthError, match="malformed"):
        _verify(_b64(header) + "." + payload + "." + signature, [ec])


@pytest.mark.parametrize("assertion", ["", "a.b", "a.b.c", "a.b.c.d", _b64({"alg": "ES256"}) + "." + _b64([1]) + ".",
                                       _b64({"alg": "ES256"}) + "=." + _b64(CLAIMS) + ".", "é.é.é"])
def test_what_is_not_a_compact_jws_with_a_json_object_payload_is_refused(assertion: str) -> None:
    with pytest.raises(OAuthError, match="not a signed JWT") as refused:
        read_unverified(assertion)
    assert refused.value.error == "invalid_client"
