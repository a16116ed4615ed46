"""The issuer's signing keys, fetched from its JWKS and cached.

The JWKS is fetched on first use. A token whose ``kid`` is not in the cache triggers a refetch (the issuer
rotated keys), but fetches are rate-limited to one per ``min_refetch_seconds`` and concurrent requests share
a single fetch, so tokens with made-up ``kid`` values cannot turn us into a load generator against the
issuer. The cache is also refreshed after ``max_age_seconds`` so that a key the issuer withdrew stops being
trusted; if that refresh fails, the cached keys stay in use.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import structlog
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key
from joserfc.jws import JWSAlgModel

from shared.auth.problems import invalid_token, issuer_unavailable, safe_label

log = structlog.get_logger("refnet.auth")

_MAX_JWKS_BYTES = 256 * 1024
_MAX_JWKS_KEYS = 64
_FAILED_FETCH_RETRY_SECONDS = 5.0


class _JWKSUnavailable(Exception):
    """The JWKS could not be fetched or used."""


class IssuerKeys:
    def __init__(self, jwks_url: str, *, min_refetch_seconds: float, max_age_seconds: float,
                 fetch_timeout_seconds: float, http_client: httpx.AsyncClient | None) -> None:
        self.jwks_url = jwks_url
        self.min_refetch_seconds = min_refetch_seconds
        self.max_age_seconds = max_age_seconds
        self.fetch_timeout_seconds = fetch_timeout_seconds
        self._http = http_client
        self._owns_http = http_client is None
        self._lock = asyncio.Lock()
        self._keys: list[Key] | None = None
        self.generation = 0  # bumped on every successful fetch: lets waiters see someone else fetched
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._attempted_at: float | None = None  # monotonic time of the last fetch attempt
        self._last_attempt_failed = False
        # The keys fit for each (kid, alg), remembered per key set (emptied on every fetch).
        self._fitting: dict[tuple[str | None, str], list[Key]] = {}
        #: Number of JWKS fetch attempts made, successful or not (for metrics and tests).
        self.fetch_count = 0

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def all(self) -> list[Key]:
        """The keys of the last successful fetch (none before the first)."""
        return list(self._keys or [])

    def fresh(self) -> bool:
        return self._fetched_at is not None and time.monotonic() - self._fetched_at <= self.max_age_seconds

    def known(self, kid: str | None, alg: str) -> list[Key] | None:
        """The keys already known to fit, while the key set is fresh; None when they must be looked up."""
        return self._fitting.get((kid, alg)) if self.fresh() else None

    async def fitting(self, kid: str | None, alg: str, model: JWSAlgModel) -> list[Key]:
        """The issuer's keys that can verify a token with this ``kid`` and algorithm, fetching if need be."""
        now = time.monotonic()
        if self._keys is None:
            await self._refresh(self.generation, must_succeed=True)
        elif self._fetched_at is not None and now - self._fetched_at > self.max_age_seconds \
                and not self._lock.locked():
            # Stale but usable: refresh quietly; if another request is already refreshing, do not queue.
            await self._refresh(self.generation, must_succeed=False)

        found = self._matching(kid, alg, model)
        if found:
            return found
        # Unknown kid: the issuer may have rotated. Refetch, rate-limited and shared between requests.
        await self._refresh(self.generation, must_succeed=True)
        found = self._matching(kid, alg, model)
        if not found:
            raise invalid_token(
                "No signing key of the issuer matches the token's 'kid' and 'alg'."
                if kid is not None
                else "The token has no 'kid' and no signing key of the issuer fits its 'alg'."
            )
        return found

    def _matching(self, kid: str | None, alg: str, model: JWSAlgModel) -> list[Key]:
        found = self._fitting.get((kid, alg))
        if found is not None:
            return found
        keys = [k for k in self._keys or [] if kid is None or k.kid == kid]
        usable: list[Key] = []
        for key in keys:
            try:
                model.check_key(key)  # joserfc: key type, curve, "use" and the key's own "alg" fit the algorithm
                usable.append(key)
            except JoseError:
                continue
        if usable:  # only non-empty answers: made-up kids add nothing
            self._fitting[(kid, alg)] = usable
        return usable

    async def _refresh(self, seen_generation: int, *, must_succeed: bool) -> None:
        """Fetch the JWKS unless someone else just did, or the rate limit forbids it.

        ``must_succeed``: a key is needed now, so if the keys cannot be had because the issuer is failing,
        raise 503 rather than pretend the token is bad.
        """
        async with self._lock:
            if self.generation != seen_generation:
                return  # another request fetched while we waited for the lock
            now = time.monotonic()
            if self._attempted_at is not None:
                # After a failure, retry sooner: the outage may be a blip, and without keys we serve 503s.
                window = self.min_refetch_seconds
                if self._last_attempt_failed:
                    window = min(window, _FAILED_FETCH_RETRY_SECONDS)
                wait = window - (now - self._attempted_at)
                if wait > 0:
                    if self._last_attempt_failed and must_succeed:
                        raise issuer_unavailable(wait)
                    return
            self._attempted_at = now
            self.fetch_count += 1
            try:
                keys = await self._fetch()
            except _JWKSUnavailable as exc:
                self._last_attempt_failed = True
                log.warning("jwks_fetch_failed", jwks_url=self.jwks_url, reason=str(exc),
                            have_cached_keys=self._keys is not None)
                if must_succeed:
                    retry = min(self.min_refetch_seconds, _FAILED_FETCH_RETRY_SECONDS)
                    raise issuer_unavailable(retry) from exc
                return
            self._last_attempt_failed = False
            self._keys = keys
            self._fitting = {}
            self._fetched_at = time.monotonic()
            self.generation += 1
            log.info("jwks_fetched", jwks_url=self.jwks_url, keys=len(keys))

    async def _fetch(self) -> list[Key]:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        try:
            response = await self._http.get(
                self.jwks_url, timeout=self.fetch_timeout_seconds, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise _JWKSUnavailable(f"{type(exc).__name__}") from exc
        if response.status_code != 200:
            raise _JWKSUnavailable(f"HTTP {response.status_code}")
        if len(response.content) > _MAX_JWKS_BYTES:
            raise _JWKSUnavailable("JWKS document too large")
        try:
            document = response.json()
        except ValueError as exc:
            raise _JWKSUnavailable("JWKS is not JSON") from exc
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise _JWKSUnavailable("JWKS has no 'keys' array")

        keys: list[Key] = []
        for entry in entries[:_MAX_JWKS_KEYS]:
            if not isinstance(entry, dict):
                continue
            # Only signature keys of asymmetric types; a symmetric key in a public JWKS is a mistake at best.
            if entry.get("use") not in (None, "sig") or entry.get("kty") not in ("EC", "RSA", "OKP"):
                continue
            try:
                keys.append(JWKRegistry.import_key(entry))
            except Exception as exc:
                # RFC 7517 section 5: ignore keys we cannot use rather than fail the whole set.
                log.warning("jwks_key_skipped", kid=safe_label(str(entry.get("kid"))), error=type(exc).__name__)
                continue
        if not keys:
            raise _JWKSUnavailable("JWKS holds no usable signing keys")
        return keys
