"""referral's master-key rotation (``refnet keys rotate-referral``): every case data key and every webhook
signing secret (the current one and the previous one still in its grace) ends up under the new key; the free
text still opens and deliveries are still signed with the same secrets with only the new key configured; an
interrupted rotation resumes with its staged key; the two-key layout (read-only mounts) writes no file."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from sqlalchemy import text
from standardwebhooks import Webhook
from typer.testing import CliRunner

from deploy.commands import referral as cli
from services.referral.service.keys import count_not_under_key
from services.referral.service.texts import ENVELOPE
from services.referral.webhooks import SECRET_ENVELOPE, secret_binding
from shared.crypto import MasterKey, Undecryptable, write_key_file
from shared.db import make_engine, make_sessionmaker
from tests.conftest import Infra
from tests.integration.referral.conftest import Service, body, running_referral
from tests.support.issuer import LocalIssuer

HOOK_SCOPE = "events:read referrals:read referrals:write"
WHAT = "data keys and webhook secrets"


@dataclass
class Receiver:
    received: list[tuple[dict[str, str], bytes]]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.received.append((dict(request.headers), request.content))
        return httpx.Response(204)


@dataclass
class Before:
    """What a referral running under the old key left: referrals with free text, a subscription with a
    current and a previous secret."""

    sender: str
    recipient: str
    referrals: dict[str, tuple[str, str]]  # id -> (reason, note)
    subscription: str
    secrets: tuple[str, str]  # (previous, current)


def _running(database_url: str, infra: Infra, issuer: LocalIssuer, key_file: Path, receiver: Receiver,
             **settings: Any) -> Any:
    return running_referral(
        database_url, infra.bootstrap, issuer, master_key_file=str(key_file),
        webhook_transport=httpx.MockTransport(receiver.handle), webhook_poll_seconds=0.05,
        outbound_allow_private=False, **settings)  # the receivers are *.test over http, as in test_webhooks


async def _refer(svc: Service, sender: str, recipient: str, reason: str) -> str:
    case_id, _ = svc.intake.add_case(sender, consent_to=recipient, categories={"identity", "notes"})
    made = await svc.refer(sender, body(case_id, recipient, reason=reason, shared_categories=["identity", "notes"]))
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _make_data(database_url: str, infra: Infra, issuer: LocalIssuer, key_file: Path) -> Before:
    async with _running(database_url, infra, issuer, key_file, Receiver([])) as svc:
        sender, recipient = await svc.agency(), await svc.agency()
        referrals: dict[str, tuple[str, str]] = {}
        for n in range(3):
            reason, note = f"reason {n}: sleeps at the station", f"note {n}: called back"
            rid = await _refer(svc, sender, recipient, reason)
            moved = await svc.move(recipient, rid, "received", note=note)
            assert moved.status_code == 200, moved.text
            referrals[rid] = (reason, note)
        hook = await svc.client.post("/subscriptions", json={"url": "http://keys.test/hooks"},
                                     headers=svc.headers(recipient, HOOK_SCOPE))
        assert hook.status_code == 201, hook.text
        rotated = await svc.client.post(f"/subscriptions/{hook.json()['id']}/rotate-secret",
                                        headers=svc.headers(recipient, HOOK_SCOPE))
        assert rotated.status_code == 200, rotated.text
        return Before(sender, recipient, referrals, hook.json()["id"], (hook.json()["secret"],
                                                                         rotated.json()["secret"]))


async def _wrapped(database_url: str) -> tuple[list[Any], list[Any]]:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            keys = list(await conn.execute(text("SELECT case_id, wrapped_key, master_key_id FROM case_keys")))
            secrets = list(await conn.execute(text(
                "SELECT id, secret_wrapped, secret_key_id, previous_secret_wrapped, previous_secret_key_id "
                "FROM webhook_subscriptions")))
    finally:
        await engine.dispose()
    return keys, secrets


async def _left(database_url: str, key: MasterKey) -> int:
    engine = make_engine(database_url, pool_size=1)
    try:
        return await count_not_under_key(make_sessionmaker(engine), key)
    finally:
        await engine.dispose()


async def _all_under(database_url: str, new_key: MasterKey, old_key: MasterKey) -> None:
    """Every case key and both secrets of every subscription name the new key, open with it and not with the
    old one; nothing is left for the count."""
    keys, secrets = await _wrapped(database_url)
    assert keys and secrets
    for case_id, wrapped, key_id in keys:
        assert key_id == new_key.key_id
        ENVELOPE.unwrap(bytes(wrapped), new_key, case_id)
        with pytest.raises(Undecryptable):
            ENVELOPE.unwrap(bytes(wrapped), old_key, case_id)
    for sub_id, current, current_id, previous, previous_id in secrets:
        assert current_id == previous_id == new_key.key_id
        for wrapped in (current, previous):
            SECRET_ENVELOPE.unwrap(bytes(wrapped), new_key, secret_binding(sub_id))
            with pytest.raises(Undecryptable):
                SECRET_ENVELOPE.unwrap(bytes(wrapped), old_key, secret_binding(sub_id))
    assert await _left(database_url, new_key) == 0


async def _still_works(database_url: str, infra: Infra, issuer: LocalIssuer, key_file: Path,
                       before: Before) -> None:
    """A referral given only ``key_file`` (no previous key) opens the free text and signs deliveries with both
    secrets the subscription had."""
    receiver = Receiver([])
    async with _running(database_url, infra, issuer, key_file, receiver, previous_master_key_file="") as svc:
        for rid, (reason, note) in before.referrals.items():
            shown = await svc.client.get(f"/referrals/{rid}", headers=svc.headers(before.sender))
            assert shown.status_code == 200, shown.text
            assert shown.json()["reason"] == reason and shown.json()["free_text"] == "shown"
            assert shown.json()["history"][-1]["note"] == note
        await _refer(svc, before.sender, before.recipient, "made after the rotation")
        await _wait_for(lambda: len(receiver.received) >= 1)
    headers, content = receiver.received[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in before.secrets:
        Webhook(secret).verify(content, headers)


def _invoke(monkeypatch: pytest.MonkeyPatch, database_url: str, key_file: Path, *args: str,
            previous: Path | None = None) -> Any:
    monkeypatch.setenv("REFNET_REFERRAL_DATABASE_URL", database_url)
    monkeypatch.setenv("REFNET_REFERRAL_MASTER_KEY_FILE", str(key_file))
    if previous is not None:
        monkeypatch.setenv("REFNET_REFERRAL_PREVIOUS_MASTER_KEY_FILE", str(previous))
    else:
        monkeypatch.delenv("REFNET_REFERRAL_PREVIOUS_MASTER_KEY_FILE", raising=False)
    app, keys_app = typer.Typer(), typer.Typer()
    app.add_typer(keys_app, name="keys")
    cli.register(app, keys_app)
    return CliRunner().invoke(app, ["keys", "rotate-referral", *args])


async def test_rotation_rewraps_case_keys_and_both_webhook_secrets(
    infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    database_url = new_database("referral_keys")
    key_file = tmp_path / "referral_master_key.b64"
    write_key_file(key_file, MasterKey.generate())
    old_key = MasterKey.from_file(key_file)
    before = await _make_data(database_url, infra, issuer, key_file)

    result = await asyncio.to_thread(_invoke, monkeypatch, database_url, key_file)
    assert result.exit_code == 0, result.output
    new_key = MasterKey.from_file(key_file)
    assert new_key.key_id != old_key.key_id
    assert f"0 {WHAT} are still wrapped by another key" in result.output
    # 3 case keys, the subscription's two secrets
    assert f"re-wrapped 5 {WHAT}" in result.output
    assert old_key.encoded().decode() not in result.output and new_key.encoded().decode() not in result.output
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert not Path(str(key_file) + ".new").exists()

    await _all_under(database_url, new_key, old_key)
    await _still_works(database_url, infra, issuer, key_file, before)


async def test_an_interrupted_rotation_resumes_with_the_staged_key(
    infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer, tmp_path: Path,
) -> None:
    database_url = new_database("referral_keys")
    key_file = tmp_path / "referral_master_key.b64"
    write_key_file(key_file, MasterKey.generate())
    old_key = MasterKey.from_file(key_file)
    before = await _make_data(database_url, infra, issuer, key_file)
    # As if a rotation had staged its key and re-wrapped one case key and the current secret, then died.
    staged_key = MasterKey.generate()
    staged = Path(str(key_file) + ".new")
    write_key_file(staged, staged_key)
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            case_id, wrapped = (await conn.execute(text(
                "SELECT case_id, wrapped_key FROM case_keys ORDER BY case_id LIMIT 1"))).one()
            rewrapped = ENVELOPE.wrap(ENVELOPE.unwrap(bytes(wrapped), old_key, case_id), staged_key, case_id)
            await conn.execute(text("UPDATE case_keys SET wrapped_key = :w, master_key_id = :k WHERE case_id = :c"),
                               {"w": rewrapped, "k": staged_key.key_id, "c": case_id})
            secret = (await conn.execute(text("SELECT secret_wrapped FROM webhook_subscriptions WHERE id = :s"),
                                         {"s": before.subscription})).scalar_one()
            binding = secret_binding(before.subscription)
            rewrapped = SECRET_ENVELOPE.wrap(SECRET_ENVELOPE.unwrap(bytes(secret), old_key, binding), staged_key,
                                             binding)
            await conn.execute(text("UPDATE webhook_subscriptions SET secret_wrapped = :w, secret_key_id = :k "
                                    "WHERE id = :s"), {"w": rewrapped, "k": staged_key.key_id,
                                                       "s": before.subscription})
    finally:
        await engine.dispose()
    assert await _left(database_url, staged_key) == 3  # two case keys, the subscription (its previous secret)

    new_key, count, left = await cli.rotate(database_url, key_file)
    assert new_key == staged_key and (count, left) == (3, 0)
    assert MasterKey.from_file(key_file) == staged_key and not staged.exists()
    await _all_under(database_url, staged_key, old_key)
    await _still_works(database_url, infra, issuer, key_file, before)


async def test_rotation_with_read_only_key_mounts_writes_no_file(
    infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The two-key layout: the new key is the current key file, the old one the previous; only re-wrapping."""
    database_url = new_database("referral_keys")
    old_file = tmp_path / "old.b64"
    write_key_file(old_file, MasterKey.generate())
    old_key = MasterKey.from_file(old_file)
    before = await _make_data(database_url, infra, issuer, old_file)
    mount = tmp_path / "secret"
    mount.mkdir()
    new_key = MasterKey.generate()
    write_key_file(mount / "master.b64", new_key)
    write_key_file(mount / "previous.b64", old_key)
    files = {p.name: p.read_bytes() for p in mount.iterdir()}
    mount.chmod(0o555)
    try:
        result = await asyncio.to_thread(_invoke, monkeypatch, database_url, mount / "master.b64", "--rewrap-only",
                                         previous=mount / "previous.b64")
    finally:
        mount.chmod(0o755)
    assert result.exit_code == 0, result.output
    assert f"re-wrapped 5 {WHAT}" in result.output and f"0 {WHAT} are still wrapped" in result.output
    assert {p.name: p.read_bytes() for p in mount.iterdir()} == files  # no `.new`, nothing replaced
    await _all_under(database_url, new_key, old_key)
    (mount / "previous.b64").unlink()  # the old key leaves the configuration
    await _still_works(database_url, infra, issuer, mount / "master.b64", before)
