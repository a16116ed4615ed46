"""Outbound HTTP to addresses partners give us (a webhook URL, an agency's ``jwks_uri``): SSRF-safe and bounded.

A partner's URL must not make RefNet call into its own network (another service, the cluster's API, a cloud
metadata endpoint). So every host name is resolved when the connection is made, every address it resolves to
is checked, and the connection goes to the address that was checked: a name cannot answer "public" to the
check and "private" to the connect (DNS rebinding). TLS still verifies the certificate of the name in the URL.
Plain ``http`` and private addresses are refused unless the development settings allow them.

Every call has a total deadline (resolution, connect, send and the whole answer) and reads at most a fixed
number of bytes, so a receiver that streams for ever or trickles a byte at a time holds nothing for long.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from shared.errors import Problem

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the addresses the name resolves to (a test can inject its own).
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# IANA's special-purpose registries (RFC 6890 and successors): nothing here is a partner's server.
_V4_REFUSED: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple((ipaddress.IPv4Network(n), why) for n, why in (
    ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"), ("192.0.2.0/24", "documentation"), ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
))
_V6_REFUSED: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple((ipaddress.IPv6Network(n), why) for n, why in (
    ("64:ff9b:1::/48", "local NAT64"), ("100::/64", "discard"), ("2001::/23", "reserved (IETF protocols)"),
    ("2001:db8::/32", "documentation"), ("3fff::/20", "documentation"), ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"), ("fec0::/10", "site-local"), ("ff00::/8", "multicast"),
))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# Names that only mean something inside a network (RFC 6761, RFC 8375, Kubernetes services).
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".svc", ".lan")


def refused_address(address: Address) -> str | None:
    """Why RefNet may not connect to ``address`` (None: a public address)."""
    if isinstance(address, ipaddress.IPv6Address):
        # Forms that carry an IPv4 address reach that address: judge it.
        if address.ipv4_mapped is not None:
            return refused_address(address.ipv4_mapped)
        if address.sixtofour is not None:
            return refused_address(address.sixtofour)
        if address in _NAT64:
            return refused_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for network, why in _V6_REFUSED:
            if address in network:
                return why
        if address not in _GLOBAL_UNICAST:
            return "loopback" if address.is_loopback else "reserved"
        return None if address.is_global else "reserved"
    for network4, why in _V4_REFUSED:
        if address in network4:
            return why
    return None if address.is_global else "reserved"


def refused_name(host: str) -> str | None:
    """Why a host as written in a URL is refused before any lookup (None: look it up)."""
    name = host.strip("[]").rstrip(".").lower()
    if not name:
        return "no host"
    try:
        address = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        pass
    else:
        why = refused_address(address)
        return f"a {why} address" if why else None
    if name == "localhost" or name.endswith(_INTERNAL_SUFFIXES):
        return "a name of this host or an internal network"
    if "." not in name:
        return "a single-label (internal) name"
    return None


@dataclass(frozen=True)
class OutboundPolicy:
    """``allow_http`` and ``allow_private`` are for a development stack on one machine only."""

    allow_http: bool = False
    allow_private: bool = False
    deadline_seconds: float = 10.0
    max_response_bytes: int = 64 * 1024
    resolver: Resolver = system_resolver


class OutboundRefused(httpx.ConnectError):
    """The URL's scheme or an address its host resolves to is not allowed. ``reason`` names why (no URL)."""

    def __init__(self, reason: str, request: httpx.Request | None = None) -> None:
        super().__init__(f"outbound call refused: {reason}", request=request)
        self.reason = reason


class DeadlineExceeded(httpx.TimeoutException):
    """The whole call took longer than the policy's deadline."""


def refused_url(url: str, policy: OutboundPolicy) -> str | None:
    """What is wrong with ``url`` before any lookup (None: nothing yet)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError):  # idna's errors are UnicodeErrors
        return "not a valid URL"
    if parsed.scheme != "https" and not (parsed.scheme == "http" and policy.allow_http):
        return "only https URLs are allowed"
    if policy.allow_private:
        return None
    # The host as it goes to DNS and to the connection (IDNA-encoded), not as displayed.
    return refused_name(parsed.raw_host.decode("ascii"))


async def check_url(url: str, policy: OutboundPolicy) -> None:
    """Raise :class:`OutboundRefused` for a URL RefNet may not call, resolving its host now.

    A name that does not resolve yet is accepted: the check at connect time decides when it does.
    """
    why = refused_url(url, policy)
    if why:
        raise OutboundRefused(why)
    if policy.allow_private:
        return
    parsed = httpx.URL(url)
    try:
        async with asyncio.timeout(min(policy.deadline_seconds, 5.0)):
            addresses = await policy.resolver(parsed.raw_host.decode("ascii"), parsed.port or 443)
    except (OSError, TimeoutError):
        return
    except UnicodeError:  # not encodable as a DNS name (a label over 63 characters...): it never resolves
        raise OutboundRefused("the host is not a valid DNS name") from None
    for text in addresses:
        why = refused_address(ipaddress.ip_address(text.split("%")[0]))
        if why:
            raise OutboundRefused(f"the host resolves to a {why} address")


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, and connects to a checked one (so no second lookup can differ)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        why = None if self.policy.allow_private else refused_name(host)
        if why:
            raise OutboundRefused(why)
        try:
            addresses = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a.split("%")[0]) for a in await self.policy.resolver(host, port)]
            except (OSError, UnicodeError):
                raise httpcore.ConnectError("the host name does not resolve") from None
        if not addresses:
            raise httpcore.ConnectError("the host name does not resolve")
        if not self.policy.allow_private:
            for address in addresses:
                why = refused_address(address)
                if why:
                    raise OutboundRefused(f"the host resolves to a {why} address")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the guarded network under it: no proxies from the environment (a proxy would
    resolve the name itself), the scheme checked on every request, redirects left to the caller."""

    def __init__(self, policy: OutboundPolicy, *, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits()
        super().__init__(trust_env=False, limits=limits)
        ssl_context = httpx.create_ssl_context(trust_env=False)
        # httpx does not take a network backend; its pool does (httpcore's public API).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=_GuardedBackend(policy))
        self.policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        if scheme != "https" and not (scheme == "http" and self.policy.allow_http):
            raise OutboundRefused("only https URLs are allowed", request=request)
        return await super().handle_async_request(request)


def guarded_client(policy: OutboundPolicy, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """A client for partners' URLs. ``transport`` replaces the network (tests); by default it is guarded."""
    return httpx.AsyncClient(transport=transport or GuardedTransport(policy), follow_redirects=False,
                             trust_env=False, timeout=policy.deadline_seconds)


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    headers: httpx.Headers
    content: bytes
    complete: bool  # False: the answer was longer than the cap and reading stopped there


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content


async def call(client: httpx.AsyncClient, policy: OutboundPolicy, method: str, url: str, *,
               content: bytes | None = None, headers: Mapping[str, str] | None = None) -> OutboundResponse:
    """One request within the policy's deadline, reading at most ``max_response_bytes`` of the answer
    (as sent: no decompression, so a small compressed answer cannot grow in memory)."""
    sent = {"accept-encoding": "identity", **(headers or {})}
    try:
        async with asyncio.timeout(policy.deadline_seconds):
            async with client.stream(method, url, content=content, headers=sent) as response:
                body = bytearray()
                # A test transport may hand over an answer already read.
                chunks = (response.aiter_raw() if not response.is_stream_consumed
                          else _one(response.content))
                async for chunk in chunks:
                    body += chunk
                    if len(body) > policy.max_response_bytes:
                        break
                cap = policy.max_response_bytes
                return OutboundResponse(response.status_code, response.headers, bytes(body[:cap]), len(body) <= cap)
    except TimeoutError:
        raise DeadlineExceeded(f"no complete answer within {policy.deadline_seconds:g} s") from None


async def require_callable_url(url: str, policy: OutboundPolicy, *, loc: list[str | int], slug: str) -> None:
    """:func:`check_url` as an API answers it: 422 naming why (the reason, never the URL)."""
    try:
        await check_url(url, policy)
    except OutboundRefused as refused:
        raise Problem(422, slug, f"RefNet does not call this URL: {refused.reason}.",
                      title="Unprocessable Content", errors=[{"loc": loc, "msg": refused.reason}]) from None
