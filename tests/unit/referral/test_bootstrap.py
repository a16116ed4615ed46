"""The launcher hook points referral at its client credentials once the registry has written them."""

from __future__ import annotations

from pathlib import Path

from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.bootstrap.referral import ENV_VAR, KEY_ENV_VAR, prepare
from shared.crypto import MasterKey


def context(home: Path) -> BootstrapContext:
    return BootstrapContext(service="referral", home=home, database_url="postgresql+asyncpg://x/y",
                            service_urls={"registry": "http://127.0.0.1:8001"})


def test_credentials_file_is_passed_when_present(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    prepare(ctx)
    assert ENV_VAR not in ctx.env
    (ctx.credentials_dir / "referral-service.json").write_text("{}")
    ctx = context(tmp_path)
    prepare(ctx)
    assert ctx.env[ENV_VAR] == str(tmp_path / "credentials" / "referral-service.json")


def test_a_development_master_key_is_made_once_and_kept(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    prepare(ctx)
    key_file = Path(ctx.env[KEY_ENV_VAR])
    assert key_file.parent == ctx.keys_dir and key_file.stat().st_mode & 0o077 == 0
    first = MasterKey.from_file(key_file)
    again = context(tmp_path)
    prepare(again)
    assert MasterKey.from_file(again.env[KEY_ENV_VAR]).key_id == first.key_id
