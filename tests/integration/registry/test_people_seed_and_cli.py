"""The demo people `make run` seeds (issue #20) and the `refnet staff` commands."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.bootstrap import registry as bootstrap
from deploy.launcher.cli import app as refnet
from deploy.seed import DEMO_PEOPLE
from shared.migrations import upgrade
from tests.integration.registry.conftest import ISSUER, make_settings, serve
from tests.integration.registry.people_support import (
    Person,
    browser,
    claims_of,
    enrol,
    exchange,
    pkce,
    sign_in,
)


async def test_the_demo_people_sign_in_with_their_seeded_secrets_which_a_second_run_keeps(
        new_database: Callable[[str], str], tmp_path: Path) -> None:
    url = new_database("registry_people_seed")
    await asyncio.to_thread(upgrade, "registry", url)
    ctx = BootstrapContext(service="registry", home=tmp_path, database_url=url, service_urls={"registry": ISSUER})
    await asyncio.to_thread(bootstrap.prepare, ctx)
    people_dir = tmp_path / "credentials" / "people"
    first = {p.name: p.read_text() for p in people_dir.iterdir()}
    await asyncio.to_thread(bootstrap.prepare, ctx)  # a second `make run`
    assert {p.name: p.read_text() for p in people_dir.iterdir()} == first
    assert {f"{d.login}.json" for d in DEMO_PEOPLE} == set(first)
    assert {"iom-caseworker.json", "iom-supervisor.json", "oversight-auditor.json"} <= set(first)
    for path in people_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A KEK rotation re-wraps the TOTP secrets with the signing keys: people still sign in under the new KEK.
    rotated = await asyncio.to_thread(CliRunner().invoke, refnet, ["keys", "rotate-kek"],
                                      env={"REFNET_HOME": str(tmp_path), "REFNET_REGISTRY_DATABASE_URL": url})
    assert rotated.exit_code == 0, rotated.output
    assert json.loads(rotated.stdout)["left_under_other_keks"] == 0
    assert json.loads(rotated.stdout)["rewrapped"] >= len(DEMO_PEOPLE)

    settings = make_settings(url, signing_key_file=ctx.env["REFNET_REGISTRY_SIGNING_KEY_FILE"],
                             kek_file=ctx.env["REFNET_REGISTRY_KEK_FILE"])
    async for registry in serve(settings):
        for login, roles in (("iom-caseworker", ["caseworker"]), ("oversight-auditor", ["auditor"])):
            data = json.loads((people_dir / f"{login}.json").read_text())
            person = Person(data["person_id"], None, data["agency"], login, data["password"],  # type: ignore[arg-type]
                            data["totp_secret"])
            verifier, challenge = pkce()
            async with browser(registry) as http:
                code = await sign_in(http, person, challenge, steps_ahead=0)
            tokens = await exchange(registry, code, verifier)
            assert tokens.status_code == 200, tokens.text
            access = claims_of(tokens.json()["access_token"])
            assert access["sub"] == data["person_id"] and access["roles"] == roles
            assert access["agency"] == data["agency_id"] and access["acr"] == "urn:refnet:acr:mfa"
            if roles == ["auditor"]:
                assert set(access["scope"].split()) == {"registry:read", "audit:read", "stats:read"}


async def test_staff_commands_invite_and_reset_and_register_a_client(
        new_database: Callable[[str], str], tmp_path: Path) -> None:
    url = new_database("registry_people_cli")
    await asyncio.to_thread(upgrade, "registry", url)
    ctx = BootstrapContext(service="registry", home=tmp_path, database_url=url, service_urls={"registry": ISSUER})
    await asyncio.to_thread(bootstrap.prepare, ctx)
    env = {"REFNET_HOME": str(tmp_path), "REFNET_REGISTRY_DATABASE_URL": url, "REFNET_REGISTRY_ISSUER": ISSUER,
           "REFNET_REGISTRY_KEK_FILE": ctx.env["REFNET_REGISTRY_KEK_FILE"]}

    def cli(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(refnet, list(args), env=env)
        return result.exit_code, result.stdout + (result.stderr or "")

    code, out = await asyncio.to_thread(cli, "staff", "invite", "--agency", "unhcr", "--login", "cw-7",
                                        "--role", "caseworker")
    assert code == 0, out
    invited = json.loads(out)
    assert invited["agency_id"] == "agy_unhcr" and invited["link"].startswith(ISSUER + "/staff/enrol?invite=")
    code, out = await asyncio.to_thread(cli, "staff", "invite", "--agency", "unhcr", "--login", "aud",
                                        "--role", "auditor")
    assert code != 0 and "oversight" in out
    code, out = await asyncio.to_thread(cli, "staff", "client", "add", "--client-id", "other-console",
                                        "--redirect-uri", "https://console.example.org/cb", "--confidential")
    assert code == 0 and json.loads(out)["client_secret"], out

    settings = make_settings(url, signing_key_file=ctx.env["REFNET_REGISTRY_SIGNING_KEY_FILE"],
                             kek_file=ctx.env["REFNET_REGISTRY_KEK_FILE"])
    async for registry in serve(settings):
        done, _ = await enrol(registry, invited["link"])
        assert done.status_code == 200
        code, out = await asyncio.to_thread(cli, "staff", "reset", "--agency", "agy_unhcr", "--login", "cw-7")
        assert code == 0, out
        reset = json.loads(out)
        # The invitation was used; the reset's link is new and works once.
        assert reset["link"] != invited["link"]
        done, secret = await enrol(registry, reset["link"], "another long passphrase")
        assert done.status_code == 200 and secret
