"""`refnet staff idp add|list|remove` (issue #20 part 5), and a KEK rotation that re-wraps the trusts' client
secrets: a person of the demo agency still signs in through its provider afterwards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.bootstrap import registry as bootstrap
from deploy.launcher.cli import app as refnet
from shared.migrations import upgrade
from tests.integration.registry.conftest import ISSUER, make_settings, serve
from tests.integration.registry.people_support import claims_of
from tests.integration.registry.test_federation import CALLBACK, sign_in_through
from tests.support.oidc_provider import UpstreamProvider


async def test_staff_idp_commands_and_a_kek_rotation(new_database: Callable[[str], str], tmp_path: Path) -> None:
    url = new_database("registry_idp_cli")
    await asyncio.to_thread(upgrade, "registry", url)
    ctx = BootstrapContext(service="registry", home=tmp_path, database_url=url, service_urls={"registry": ISSUER})
    await asyncio.to_thread(bootstrap.prepare, ctx)
    with UpstreamProvider() as upstream:
        upstream.redirect_uris = [CALLBACK]
        upstream.user = {"sub": "248289761001", "preferred_username": "ngo-cw-1",
                         "groups": ["RefNet Caseworkers"], "amr": ["pwd", "mfa"]}
        env = {"REFNET_HOME": str(tmp_path), "REFNET_REGISTRY_DATABASE_URL": url, "REFNET_REGISTRY_ISSUER": ISSUER,
               "REFNET_REGISTRY_KEK_FILE": ctx.env["REFNET_REGISTRY_KEK_FILE"],
               "REFNET_REGISTRY_OUTBOUND_ALLOW_HTTP": "true", "REFNET_IDP_CLIENT_SECRET": upstream.client_secret}

        def cli(*args: str) -> tuple[int, str]:
            result = CliRunner().invoke(refnet, list(args), env=env)
            # The JSON answer is stdout's last line (the commands' logs come before it).
            lines = result.stdout.strip().splitlines()
            return result.exit_code, (lines[-1] if result.exit_code == 0 and lines else
                                      result.stdout + (result.stderr or ""))

        add = ("staff", "idp", "add", "--agency", "iom", "--issuer", upstream.issuer, "--client-id",
               upstream.client_id, "--roles-claim", "groups", "--role", "RefNet Caseworkers=caseworker",
               "--mfa-amr", "mfa")
        code, out = await asyncio.to_thread(cli, *add, "--algorithm", "HS256")
        assert code != 0 and "algorithms" in out
        code, out = await asyncio.to_thread(cli, *add, "--role", "RefNet Root=root")
        assert code != 0 and "role_map" in out
        code, out = await asyncio.to_thread(cli, *add)
        assert code == 0, out
        added = json.loads(out)
        assert added["agency_id"] == "agy_iom" and added["redirect_uri"] == CALLBACK and added["has_client_secret"]
        code, out = await asyncio.to_thread(cli, "staff", "idp", "list", "--agency", "iom")
        assert code == 0 and [i["id"] for i in json.loads(out)] == [added["id"]]
        assert upstream.client_secret not in out

        rotated = await asyncio.to_thread(cli, "keys", "rotate-kek")
        assert rotated[0] == 0, rotated[1]
        report = json.loads(rotated[1])
        assert report["left_under_other_keks"] == 0

        settings = make_settings(url, signing_key_file=ctx.env["REFNET_REGISTRY_SIGNING_KEY_FILE"],
                                 kek_file=ctx.env["REFNET_REGISTRY_KEK_FILE"])
        async for registry in serve(settings):
            access = claims_of((await sign_in_through(registry, added["id"]))["access_token"])
            assert access["agency"] == "agy_iom" and access["roles"] == ["caseworker"]
            assert access["amr"] == ["pwd", "mfa"] and access["acr"] == "urn:refnet:acr:mfa"

        code, out = await asyncio.to_thread(cli, "staff", "idp", "remove", added["id"])
        assert code == 0, out
        code, out = await asyncio.to_thread(cli, "staff", "idp", "list")
        assert code == 0 and json.loads(out) == []
