"""Benchmark 4: token issuance over HTTP, and token validation -- versus bare ES256 with `cryptography`.

Issuance is ``POST /oauth/token`` on the registry with pre-signed ``private_key_jwt`` assertions (the client
signing is not part of the server's rate). Validation is ``shared.auth.TokenValidator.validate``, the code
every service runs on every request, called directly with the registry's real JWKS; the HTTP figure beside
it is what a request pays end to end with and without a token.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bench.common import Latency, Row, Section, Settings, closed_loop, ratio, timed
from bench.stack import BenchStack
from shared.auth import TokenValidator
from shared.client_auth import ASSERTION_TYPE, client_assertion


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def raw_es256() -> tuple[float, float]:
    """(seconds per sign, seconds per verify) of ES256 with cryptography, on a token-sized message."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    message = b"x" * 420
    algorithm = ec.ECDSA(hashes.SHA256())
    signature = key.sign(message, algorithm)
    sign = timed(lambda: key.sign(message, algorithm), 500)
    verify = timed(lambda: public.verify(signature, message, algorithm), 500)
    return sign, verify


def raw_verifier(tokens: list[str], validator: TokenValidator) -> tuple[Any, list[tuple[bytes, bytes]]]:
    """The issuer's public key (the very key object the validator verifies with) and, per token, the DER
    signature and the signed bytes: everything a bare ``cryptography`` verify needs."""
    keys = validator.keys.all()
    public: Any = keys[0].get_op_key("verify")
    prepared = []
    for token in tokens:
        head, payload, signature = token.split(".")
        raw = _b64(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        prepared.append((der, f"{head}.{payload}".encode()))
    return public, prepared


async def issuance(stack: BenchStack, settings: Settings, http: httpx.AsyncClient) -> tuple[Latency, list[str]]:
    credentials = stack.credentials("iom")
    seconds, warmup = settings.seconds(8, 2), settings.seconds(2, 0.5)
    count = settings.count(8000, 2000)
    assertions: Iterator[str] = iter([client_assertion(credentials["client_id"], credentials["token_url"],
                                                       credentials["private_key_pem"], lifetime=300)
                                      for _ in range(count)])
    tokens: list[str] = []

    async def issue(_: int) -> bool:
        assertion = next(assertions, None)
        if assertion is None:
            return False
        response = await http.post(credentials["token_url"], data={
            "grant_type": "client_credentials", "scope": "registry:read cases:read",
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        if response.status_code != 200:
            return False
        tokens.append(response.json()["access_token"])
        return True

    return await closed_loop(issue, concurrency=8, seconds=seconds, warmup=warmup), tokens


async def http_auth_cost(stack: BenchStack, settings: Settings, http: httpx.AsyncClient) -> dict[str, Latency]:
    base = stack.url("registry")
    token = stack.token("iom")
    seconds, warmup = settings.seconds(5, 1.5), settings.seconds(1, 0.5)

    async def healthz(_: int) -> bool:
        return (await http.get(f"{base}/healthz")).status_code == 200

    async def taxonomy(_: int) -> bool:
        response = await http.get(f"{base}/taxonomy", headers={"Authorization": f"Bearer {token}"})
        return response.status_code == 200

    async def anonymous(_: int) -> bool:
        return (await http.get(f"{base}/taxonomy")).status_code == 401

    return {
        "healthz (no token)": await closed_loop(healthz, concurrency=1, seconds=seconds, warmup=warmup),
        "taxonomy without token (401)": await closed_loop(anonymous, concurrency=1, seconds=seconds, warmup=warmup),
        "taxonomy with token (200)": await closed_loop(taxonomy, concurrency=1, seconds=seconds, warmup=warmup),
    }


async def validation(stack: BenchStack, tokens: list[str]) -> dict[str, float]:
    """Seconds per validation -- first sight (each token once, fresh cache) and reuse (one token again and
    again) -- each beside a bare verify of the same signatures, the passes interleaved so load drifts evenly."""
    registry = stack.url("registry")
    jwks = f"{registry}/.well-known/jwks.json"
    distinct = tokens[:3000]
    algorithm = ec.ECDSA(hashes.SHA256())
    first_sight: list[float] = []
    raw_first: list[float] = []
    reused: list[float] = []
    raw_reused: list[float] = []
    for _ in range(2):
        fresh = TokenValidator(registry, "refnet", jwks)
        await fresh.validate(tokens[-1])  # fetches the JWKS
        public, prepared = raw_verifier(distinct, fresh)
        began = time.perf_counter()
        for der, message in prepared:
            public.verify(der, message, algorithm)
        raw_first.append((time.perf_counter() - began) / len(prepared))
        began = time.perf_counter()
        for token in distinct:
            await fresh.validate(token)
        first_sight.append((time.perf_counter() - began) / len(distinct))
        der, message = prepared[0]
        began = time.perf_counter()
        for _ in range(2000):
            public.verify(der, message, algorithm)
        raw_reused.append((time.perf_counter() - began) / 2000)
        began = time.perf_counter()
        for _ in range(2000):
            await fresh.validate(distinct[0])
        reused.append((time.perf_counter() - began) / 2000)
        await fresh.aclose()
    return {"first_sight_s": min(first_sight), "raw_verify_first_sight_s": min(raw_first),
            "reused_s": min(reused), "raw_verify_reused_s": min(raw_reused), "distinct_tokens": len(distinct)}


async def run(stack: BenchStack, settings: Settings, section: Section) -> None:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        issued, tokens = await issuance(stack, settings, http)
        http_cost = await http_auth_cost(stack, settings, http)
    sign_s, verify_s = await asyncio.to_thread(raw_es256)
    figures = await validation(stack, tokens)
    raw_issue_rate = 1 / (sign_s + verify_s)
    section.data = {
        "issuance": issued.json(), "raw_es256_sign_per_s": 1 / sign_s, "raw_es256_verify_per_s": 1 / verify_s,
        "validation": {k: v for k, v in figures.items()},
        "http": {name: lat.json() for name, lat in http_cost.items()},
    }
    section.rows.append(Row(
        "4 tokens", "issuance, POST /oauth/token (concurrency 8)", issued.brief(),
        f"ES256 sign + verify: {raw_issue_rate:,.0f}/s", f"{ratio(issued.per_second, raw_issue_rate):.1%} of raw",
        note=f"{issued.errors} errors" if issued.errors else ""))
    for label, key, raw_key in (
            ("validation, token reused (per request)", "reused_s", "raw_verify_reused_s"),
            (f"validation, token seen for the first time ({figures['distinct_tokens']:,} tokens)", "first_sight_s",
             "raw_verify_first_sight_s")):
        rate, raw_rate = 1 / figures[key], 1 / figures[raw_key]
        share = ratio(rate, raw_rate)
        section.rows.append(Row(
            "4 tokens", label, f"{rate:,.0f}/s ({figures[key] * 1e6:.0f} us)",
            f"ES256 verify: {raw_rate:,.0f}/s ({figures[raw_key] * 1e6:.0f} us)",
            f"{share:.0%} of raw" if share < 10 else f"{share:,.0f}x raw",
            "validation >= 80 % of raw verify rate", share >= 0.8))
    healthz = http_cost["healthz (no token)"]
    authed = http_cost["taxonomy with token (200)"]
    section.rows.append(Row(
        "4 tokens", "over HTTP: GET /taxonomy with token vs GET /healthz",
        f"p50 {authed.p50_ms:.2f} ms / p99 {authed.p99_ms:.2f} ms",
        f"/healthz p50 {healthz.p50_ms:.2f} / p99 {healthz.p99_ms:.2f} ms",
        f"{authed.p50_ms - healthz.p50_ms:+.2f} ms p50"))
