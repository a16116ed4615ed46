"""One source of truth for the registry's signing keys: the database. A key file only seeds an empty
database; restarting with a stale file (a secret from before a rotation) does not revert the rotation."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.bootstrap import registry as bootstrap
from deploy.launcher.cli import app
from shared.migrations import upgrade
from tests.integration.registry.conftest import ISSUER, make_settings, serve


def _kid(token: str) -> str:
    kid: str = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]
    return kid


async def test_a_stale_key_file_cannot_revert_a_rotation(new_database: Callable[[str], str], tmp_path: Path) -> None:
    url = new_database("registry_stale")
    ctx = BootstrapContext(service="registry", home=tmp_path, database_url=url, service_urls={"registry": ISSUER})
    await asyncio.to_thread(upgrade, "registry", url)
    await asyncio.to_thread(bootstrap.prepare, ctx)
    key_file = tmp_path / "signing.jwks.json"
    stale = Path(ctx.env["REFNET_REGISTRY_SIGNING_KEY_FILE"]).read_text()
    key_file.write_text(stale)
    env = {"REFNET_REGISTRY_DATABASE_URL": url, "REFNET_REGISTRY_SIGNING_KEY_FILE": str(key_file),
           "REFNET_REGISTRY_KEK_FILE": ctx.env["REFNET_REGISTRY_KEK_FILE"]}
    settings = make_settings(url, signing_key_file=str(key_file), kek_file=ctx.env["REFNET_REGISTRY_KEK_FILE"])
    async for registry in serve(settings):
        old_kid = _kid(await registry.token(await registry.agency(["cases:read"])))
        # A rotation because the key may be compromised: the old key is dropped at once.
        result = await asyncio.to_thread(CliRunner().invoke, app,
                                         ["keys", "rotate", "--activate-in", "0", "--drop-previous"], env=env)
        assert result.exit_code == 0, result.output
        new_kid = json.loads(result.stdout)["newest_kid"]
        assert new_kid != old_kid
    # The secret was not updated (or an old copy of it came back): the file still names the old key.
    key_file.write_text(stale)
    async for restarted in serve(settings):
        token = await restarted.token(await restarted.agency(["cases:read"]))
        assert _kid(token) == new_kid  # the rotation stands
        jwks = [k["kid"] for k in (await restarted.http.get("/.well-known/jwks.json")).json()["keys"]]
        assert old_kid not in jwks  # the dropped key is not published again


async def test_a_key_file_seeds_an_empty_database(new_database: Callable[[str], str], tmp_path: Path) -> None:
    """The file's first key signs, its second stays published as the previous one."""
    from services.registry.oauth import generate_signing_key, signing_key_file_content

    url = new_database("registry_seedfile")
    ctx = BootstrapContext(service="registry", home=tmp_path, database_url=url, service_urls={"registry": ISSUER})
    await asyncio.to_thread(upgrade, "registry", url)
    await asyncio.to_thread(bootstrap.prepare, ctx)
    first, second, third = generate_signing_key(), generate_signing_key(), generate_signing_key()
    key_file = tmp_path / "seed.jwks.json"
    key_file.write_text(signing_key_file_content([(k.kid, k.private_pem) for k in (first, second, third)]))
    fresh = new_database("registry_seedfile")
    await asyncio.to_thread(upgrade, "registry", fresh)
    settings = make_settings(fresh, signing_key_file=str(key_file), kek_file=ctx.env["REFNET_REGISTRY_KEK_FILE"])
    async for registry in serve(settings):
        assert _kid(await registry.token(await registry.agency(["cases:read"]))) == first.kid
        jwks = [k["kid"] for k in (await registry.http.get("/.well-known/jwks.json")).json()["keys"]]
        assert jwks == [first.kid, second.kid]
