"""A console of each test's own: a fresh database migrated to head, a key-encryption key in a temporary
directory, and a stand-in provider and APIs over real HTTP (fake_network.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from services.console.app import create_app
from services.console.deps import Deps
from services.console.settings import ConsoleSettings
from shared.kek import KeyEncryptionKey, write_key_file
from shared.migrations import upgrade
from tests.conftest import Infra, psql
from tests.integration.console.fake_network import FakeNetwork

COOKIE = "refnet_console"
BASE = "http://console.test"


@pytest.fixture
def network() -> Iterator[FakeNetwork]:
    net = FakeNetwork()
    net.start()
    try:
        yield net
    finally:
        net.stop()


@dataclass
class Console:
    app: FastAPI
    client: httpx.AsyncClient
    network: FakeNetwork
    database_url: str
    server_url: str

    @property
    def deps(self) -> Deps:
        return self.app.state.runtime.need(Deps)

    def sql(self, statement: str) -> str:
        return psql(self.server_url, statement, self.database_url.rsplit("/", 1)[1])

    async def get(self, path: str, session: str | None = None, **kwargs: Any) -> httpx.Response:
        cookies = {COOKIE: session} if session else {}
        return await self.client.get(path, headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
                                     **kwargs)

    async def post(self, path: str, session: str | None, data: dict[str, Any]) -> httpx.Response:
        headers = {"Cookie": f"{COOKIE}={session}"} if session else {}
        return await self.client.post(path, headers=headers, data=data)

    async def sign_in(self) -> str:
        """Through the provider as a browser would: the console's redirect, the provider's answer, the callback.
        Returns the signed-in session id (the cookie's value)."""
        started = await self.get("/auth/login")
        assert started.status_code == 303, started.text
        pending = cookie_of(started)
        async with httpx.AsyncClient() as browser:
            at_provider = await browser.get(started.headers["location"])
        assert at_provider.status_code == 302, at_provider.text
        back = urlsplit(at_provider.headers["location"])
        finished = await self.get(f"{back.path}?{back.query}", session=pending)
        assert finished.status_code == 303, finished.text
        session = cookie_of(finished)
        assert session and session != pending
        return session

    async def csrf(self, session: str, page: str = "/inbox") -> str:
        answer = await self.get(page, session=session)
        found = re.search(r'name="csrf" value="([^"]+)"', answer.text)
        assert found, answer.text
        return found.group(1)


def cookie_of(answer: httpx.Response) -> str:
    for header in answer.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == COOKIE:
            return rest.split(";", 1)[0]
    raise AssertionError(f"no {COOKIE} cookie set: {answer.headers.get_list('set-cookie')}")


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.fixture
def console_settings(tmp_path: Path, infra: Infra, new_database: Callable[[str], str],
                     network: FakeNetwork) -> Callable[..., ConsoleSettings]:
    kek = tmp_path / "console_kek.b64"
    write_key_file(kek, KeyEncryptionKey.generate())
    database_url = new_database("console")

    def make(**overrides: Any) -> ConsoleSettings:
        values: dict[str, Any] = {
            "database_url": database_url, "kafka_bootstrap": infra.bootstrap, "log_json": False,
            "kek_file": str(kek), "oidc_issuer": network.url, "issuer": network.url, "public_url": BASE,
            "registry_url": network.url, "intake_url": network.url, "referral_url": network.url,
            "audit_url": network.url,
        }
        values.update(overrides)
        return ConsoleSettings(**values)

    return make


async def running_console(settings: ConsoleSettings, infra: Infra, network: FakeNetwork
                          ) -> AsyncIterator[Console]:
    await asyncio.to_thread(upgrade, "console", settings.database_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield Console(app, client, network, settings.database_url, infra.server_url)


@pytest.fixture
async def console(console_settings: Callable[..., ConsoleSettings], infra: Infra,
                  network: FakeNetwork) -> AsyncIterator[Console]:
    async for harness in running_console(console_settings(), infra, network):
        yield harness
