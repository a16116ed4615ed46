"""A token a client reuses is verified once, and what depends on the clock, the keys or a revocation is still
checked on every request (shared.auth.TokenValidator's verified-token cache)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from shared.auth import TokenValidator
from shared.errors import Problem
from shared.revocation import RevocationList
from tests.support.issuer import LocalIssuer


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as local:
        yield local


def counting(validator: TokenValidator) -> list[int]:
    """Count the signature verifications the validator performs."""
    calls = [0]
    verify = validator._verify

    def counted(*args):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return verify(*args)

    validator._verify = counted  # type: ignore[method-assign]
    return calls


async def test_a_reused_token_is_verified_once_and_names_the_same_caller(issuer: LocalIssuer) -> None:
    validator = issuer.validator()
    calls = counting(validator)
    token = issuer.mint("client-1", "agency-1", "cases:read")
    first = await validator.validate(token)
    for _ in range(5):
        assert await validator.validate(token) == first
    assert calls[0] == 1
    await validator.aclose()


async def test_a_cached_token_still_expires(issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    validator = issuer.validator(leeway_seconds=0)
    token = issuer.mint(scope="cases:read", exp_in=60)
    await validator.validate(token)
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(Problem) as refused:
        await validator.validate(token)
    assert refused.value.status == 401 and "expired" in str(refused.value.detail)
    await validator.aclose()


async def test_a_cached_token_is_refused_once_revoked(issuer: LocalIssuer) -> None:
    revocations = RevocationList()
    validator = issuer.validator(revocations=revocations)
    token = issuer.mint(scope="cases:read")
    principal = await validator.validate(token)
    revocations.revoke_token(principal.token_id, time.time() + 300)
    with pytest.raises(Problem) as refused:
        await validator.validate(token)
    assert refused.value.status == 401
    await validator.aclose()


async def test_a_withdrawn_key_is_noticed_at_the_next_refresh(issuer: LocalIssuer) -> None:
    validator = issuer.validator(jwks_max_age_seconds=0.2, min_refetch_seconds=0.1)
    old_kid = issuer.current_kid
    token = issuer.mint(scope="cases:read")
    await validator.validate(token)
    issuer.rotate(keep_previous=False)
    assert old_kid not in issuer.kids
    time.sleep(0.25)  # the keys are now due for a refresh: the cache is bypassed, the key is gone
    with pytest.raises(Problem) as refused:
        await validator.validate(token)
    assert refused.value.status == 401
    await validator.aclose()


async def test_the_cache_is_bounded(issuer: LocalIssuer) -> None:
    validator = issuer.validator(verified_cache_size=3)
    calls = counting(validator)
    tokens = [issuer.mint(scope="cases:read") for _ in range(5)]
    for token in tokens:
        await validator.validate(token)
    assert len(validator._verified) == 3
    await validator.validate(tokens[0])  # evicted: verified again
    await validator.validate(tokens[-1])  # still held
    assert calls[0] == 6
    await validator.aclose()
