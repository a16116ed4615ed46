"""The launcher hook points referral at its client credentials once the registry has written them."""

from __future__ import annotations

from pathlib import Path

from deploy.launcher.bootstrap import BootstrapContext
from services.referral.bootstrap import ENV_VAR, prepare


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
