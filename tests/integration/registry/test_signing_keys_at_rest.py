"""The token-signing keys at rest: a copy of the registry's database holds no private key (they are wrapped
under the key-encryption key, which lives in a file outside it), a KEK rotation re-wraps them, and a key that
stopped signing loses its private part after the grace period while its public part stays published."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from joserfc.jwk import ECKey
from sqlalchemy import text
from typer.testing import CliRunner

from deploy.launcher.cli import app as refnet
from deploy.launcher.infra import POSTGRES_BIN_PATH
from services.registry.app import create_app
from services.registry.keyvault import unwrap_private_pem
from services.registry.oauth import generate_signing_key, signing_key_file_content
from services.registry.service import rotate_signing_key
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.kek import KeyEncryptionKey, KeyRing, KeyUnavailable, Undecryptable, write_key_file
from shared.migrations import alembic_config, upgrade
from tests.conftest import Infra
from tests.integration.registry.conftest import Registry, make_settings, new_kek_file, serve


def _kid(token: str) -> str:
    return str(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"])


def _pg_dump(infra: Infra, database_url: str) -> bytes:
    database = database_url.rsplit("/", 1)[1]
    return subprocess.run([str(POSTGRES_BIN_PATH / "pg_dump"), "--no-owner", f"{infra.server_url}/{database}"],
                          capture_output=True, check=True).stdout


def _private_material(pem: str) -> list[bytes]:
    """Every form a private EC key could take in a dump: PEM, the JWK's d, d as bytea hex, d raw."""
    d = str(ECKey.import_key(pem).as_dict(private=True)["d"])
    raw = base64.urlsafe_b64decode(d + "==")
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return [b"PRIVATE KEY", body[:40].encode(), d.encode(), raw.hex().encode(), raw]


async def _rows(registry: Registry) -> list[Any]:
    async with unit_of_work(registry.sessions) as session:
        return list((await session.execute(text(
            "SELECT kid, status, private_key_wrapped, kek_id FROM signing_keys ORDER BY created_at"))).all())


async def test_a_database_dump_holds_no_private_key_and_tokens_still_issue_and_verify(
    infra: Infra, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database("registry_at_rest")
    key = generate_signing_key()
    key_file = tmp_path / "signing.jwks.json"
    key_file.write_text(signing_key_file_content([(key.kid, key.private_pem)]))
    settings = make_settings(url, signing_key_file=str(key_file))
    async for registry in serve(settings):
        client = await registry.agency(["cases:read"])
        first = await registry.token(client)
        assert _kid(first) == key.kid
        assert (await registry.validator.validate(first)).client_id == client.client_id
    dump = await asyncio.to_thread(_pg_dump, infra, url)
    assert b"signing_keys" in dump and key.kid.encode() in dump
    for material in _private_material(key.private_pem):
        assert material not in dump

    # A rotation (`refnet keys rotate`) writes the new key to the key file, and to the database wrapped.
    env = {"REFNET_REGISTRY_DATABASE_URL": url, "REFNET_REGISTRY_SIGNING_KEY_FILE": str(key_file),
           "REFNET_REGISTRY_KEK_FILE": settings.kek_file, "REFNET_HOME": str(tmp_path)}
    result = await asyncio.to_thread(CliRunner().invoke, refnet, ["keys", "rotate", "--activate-in", "0"], env=env)
    assert result.exit_code == 0, result.output
    [new_entry, old_entry] = json.loads(key_file.read_text())["keys"]
    assert old_entry["kid"] == key.kid
    async for restarted in serve(settings):
        second = await restarted.token(client)
        assert _kid(second) == new_entry["kid"]
        for token in (first, second):
            assert (await restarted.validator.validate(token)).client_id == client.client_id
    dump = await asyncio.to_thread(_pg_dump, infra, url)
    new_pem = ECKey.import_key(new_entry).as_pem(private=True).decode()
    for pem in (key.private_pem, new_pem):
        for material in _private_material(pem):
            assert material not in dump


async def test_without_a_kek_the_registry_does_not_start(new_database: Callable[[str], str]) -> None:
    settings = make_settings(new_database("registry_no_kek"), kek_file="")
    await asyncio.to_thread(upgrade, "registry", settings.database_url)
    app = create_app(settings)
    with pytest.raises(KeyUnavailable, match="REFNET_REGISTRY_KEK_FILE"):
        async with app.router.lifespan_context(app):
            pass


async def test_a_kek_rotation_rewraps_every_private_part_and_tokens_keep_issuing(
    new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database("registry_kek_rotation")
    kek_file = tmp_path / "registry_kek.b64"
    old = KeyEncryptionKey.generate()
    write_key_file(kek_file, old)
    settings = make_settings(url, kek_file=str(kek_file))
    env = {"REFNET_REGISTRY_DATABASE_URL": url, "REFNET_REGISTRY_KEK_FILE": str(kek_file),
           "REFNET_HOME": str(tmp_path)}
    async for registry in serve(settings):
        client = await registry.agency(["cases:read"])
        before = await registry.token(client)
        async with unit_of_work(registry.sessions) as session:
            await rotate_signing_key(session, old, activate_in_seconds=3600)  # a next key, published ahead
        assert {r.kek_id for r in await _rows(registry)} == {old.key_id}

        result = await asyncio.to_thread(CliRunner().invoke, refnet, ["keys", "rotate-kek"], env=env)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        new = KeyEncryptionKey.from_file(kek_file)
        assert new.key_id != old.key_id and report["kek_id"] == new.key_id
        assert report["rewrapped"] == 2 and report["left_under_other_keks"] == 0
        assert not Path(str(kek_file) + ".new").exists()
        rows = await _rows(registry)
        assert {r.kek_id for r in rows} == {new.key_id}
        for row in rows:  # under the new KEK only: the old one no longer opens them
            unwrap_private_pem(bytes(row.private_key_wrapped), row.kek_id, row.kid, KeyRing(new))
            with pytest.raises((KeyUnavailable, Undecryptable)):
                unwrap_private_pem(bytes(row.private_key_wrapped), old.key_id, row.kid, KeyRing(old))

        # The running registry opens the re-wrapped current key (it reads the KEK file again).
        after = await registry.token(client)
        assert _kid(after) == _kid(before)
        assert (await registry.validator.validate(after)).client_id == client.client_id
    async for restarted in serve(settings):  # and a registry that only knows the new KEK
        token = await restarted.token(client)
        assert (await restarted.validator.validate(token)).client_id == client.client_id


async def test_a_key_past_its_grace_has_no_private_part_and_its_public_part_stays_published(
    new_database: Callable[[str], str],
) -> None:
    settings = make_settings(new_database("registry_grace"), signing_key_grace_seconds=0)
    ring = settings.kek_ring()
    async for registry in serve(settings):
        client = await registry.agency(["cases:read"])
        old_token = await registry.token(client)
        async with unit_of_work(registry.sessions) as session:
            await rotate_signing_key(session, ring.current)  # the old key becomes the previous one
            dropped = await rotate_signing_key(session, ring.current, activate_in_seconds=3600)
            await rotate_signing_key(session, ring.current, activate_in_seconds=3600)  # retires `dropped`
    async for restarted in serve(settings):  # past the grace (0 s): destroyed at start
        rows = {r.kid: r for r in await _rows(restarted)}
        previous = rows[_kid(old_token)]
        assert previous.status == "previous" and previous.private_key_wrapped is None and previous.kek_id is None
        assert rows[dropped].status == "retired" and rows[dropped].private_key_wrapped is None
        assert all(r.private_key_wrapped is not None for r in rows.values() if r.status in ("current", "next"))
        jwks = (await restarted.http.get("/.well-known/jwks.json")).json()["keys"]
        assert _kid(old_token) in [k["kid"] for k in jwks]
        assert (await restarted.validator.validate(old_token)).client_id == client.client_id
        new_token = await restarted.token(client)
        assert (await restarted.validator.validate(new_token)).client_id == client.client_id


async def test_a_key_within_its_grace_keeps_its_private_part(new_database: Callable[[str], str]) -> None:
    settings = make_settings(new_database("registry_in_grace"))  # the default grace: 20 minutes
    ring = settings.kek_ring()
    async for registry in serve(settings):
        client = await registry.agency(["cases:read"])
        old_kid = _kid(await registry.token(client))
        async with unit_of_work(registry.sessions) as session:
            await rotate_signing_key(session, ring.current)
    async for restarted in serve(settings):
        rows = {r.kid: r for r in await _rows(restarted)}
        assert rows[old_kid].status == "previous" and rows[old_kid].private_key_wrapped is not None


async def test_the_migration_wraps_existing_keys_and_refuses_without_the_kek(
    infra: Infra, new_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = new_database("registry_0006")
    await asyncio.to_thread(upgrade, "registry", url, "registry_0005")
    keys = {status: generate_signing_key() for status in ("current", "previous", "retired")}
    engine = make_engine(url, pool_size=1)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            for status, key in keys.items():
                await session.execute(text(
                    "INSERT INTO signing_keys (kid, private_pem, public_jwk, status) "
                    "VALUES (:kid, :pem, CAST(:jwk AS jsonb), :status)"),
                    {"kid": key.kid, "pem": key.private_pem, "jwk": json.dumps(key.public_jwk), "status": status})
    finally:
        await engine.dispose()

    monkeypatch.delenv("REFNET_REGISTRY_KEK_FILE", raising=False)
    with pytest.raises(RuntimeError, match="REFNET_REGISTRY_KEK_FILE") as refused:
        await asyncio.to_thread(upgrade, "registry", url)
    assert "openssl rand -base64 32" in str(refused.value)
    untouched = await asyncio.to_thread(_pg_dump, infra, url)  # the refused migration changed nothing
    assert keys["current"].private_pem.split("\n")[1].encode() in untouched

    kek_file = new_kek_file()
    monkeypatch.setenv("REFNET_REGISTRY_KEK_FILE", str(kek_file))
    await asyncio.to_thread(upgrade, "registry", url)
    dump = await asyncio.to_thread(_pg_dump, infra, url)
    for key in keys.values():
        for material in _private_material(key.private_pem):
            assert material not in dump

    settings = make_settings(url, kek_file=str(kek_file))
    async for registry in serve(settings):
        rows = {r.kid: r for r in await _rows(registry)}
        ring = settings.kek_ring()
        for status in ("current", "previous"):
            row = rows[keys[status].kid]
            assert unwrap_private_pem(bytes(row.private_key_wrapped), row.kek_id, row.kid, ring) == \
                keys[status].private_pem
        assert rows[keys["retired"].kid].private_key_wrapped is None  # retired before: not kept at all
        client = await registry.agency(["cases:read"])
        token = await registry.token(client)
        assert _kid(token) == keys["current"].kid  # the key that signed before the migration still signs

    await asyncio.to_thread(command.downgrade, alembic_config("registry", url), "registry_0005")
    restored = await asyncio.to_thread(_pg_dump, infra, url)
    assert keys["current"].private_pem.split("\n")[1].encode() in restored


async def test_a_kek_that_does_not_open_the_signing_key_is_a_503_problem_not_a_500(
    new_database: Callable[[str], str],
) -> None:
    settings = make_settings(new_database("registry_wrong_kek"))
    async for registry in serve(settings):
        client = await registry.agency(["cases:read"])
        await registry.token(client)
        async with unit_of_work(registry.sessions) as session:
            # The new current key is wrapped under a KEK this registry is not configured with.
            await rotate_signing_key(session, KeyEncryptionKey.generate())
        refused = await registry.http.post("/oauth/token", data=client.form())
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("signing-key-unavailable")
