"""Commands for integrators and operators: ``refnet agency add|list|suspend``, ``refnet token``,
``refnet keys rotate``, ``refnet keys rotate-kek``, ``refnet staff invite|reset|client add``.

``agency`` and ``token`` talk to the running registry over HTTP with the credentials files the demo seed
wrote (``.refnet/credentials/<name>.json``); ``keys rotate`` and ``keys rotate-kek`` work on the registry's
database directly, with its key-encryption key (REFNET_REGISTRY_KEK_FILE, else the local stack's), because
signing keys have no HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from joserfc.jwk import ECKey
from rich.console import Console
from rich.table import Table

from deploy.commands.registry_database import (
    kek_ring,
    problem_text,
    refnet_home,
    run_in_registry,
    settings_and_database,
)
from shared.client_auth import TokenUnavailable, request_token

console = Console(stderr=True)



def credentials_path(name: str) -> Path:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
        raise typer.BadParameter("a credentials name is lower-case letters, digits, - and _")
    return refnet_home() / "credentials" / f"{name}.json"


def load_credentials(name: str) -> dict[str, Any]:
    path = credentials_path(name)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise typer.BadParameter(f"no credentials file {path} (start the stack with `make run`)") from None
    except ValueError:
        raise typer.BadParameter(f"{path} is not JSON") from None
    return data


def fetch_token(credentials: dict[str, Any], scopes: list[str] | None = None) -> str:
    async def grant() -> str:
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as http:
            token, _ = await request_token(http, credentials, " ".join(scopes or []))
            return token

    try:
        return asyncio.run(grant())
    except TokenUnavailable as exc:
        console.print(f"[red]no token from {credentials['token_url']}: {exc}")
        raise typer.Exit(1) from exc


def _registry_url(credentials: dict[str, Any]) -> str:
    url: str = credentials["token_url"]
    return url.removesuffix("/oauth/token")


def _call(method: str, path: str, *, json_body: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
          as_: str = "admin") -> Any:
    credentials = load_credentials(as_)
    token = fetch_token(credentials)
    response = httpx.request(method, _registry_url(credentials) + path, json=json_body, params=params,
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
    if response.status_code >= 400:
        try:
            problem = response.json()
            console.print(f"[red]{problem.get('title')}: {problem.get('detail')}")
            for error in problem.get("errors", []):
                console.print(f"  {'.'.join(error['loc'])}: {error['msg']}")
        except ValueError:
            console.print(f"[red]HTTP {response.status_code}")
        raise typer.Exit(1)
    return response.json()


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(path, 0o600)


def agency_add(
    name: Annotated[str, typer.Option(help="the agency's display name")],
    short_name: Annotated[str, typer.Option("--short-name", help="credentials file name, e.g. caritas")],
    kind: Annotated[str, typer.Option(help="un_agency, ngo, government, service_provider or oversight")] = "ngo",
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2")] = "IT",
    scope: Annotated[list[str] | None, typer.Option("--scope", help="a scope to grant (repeat)")] = None,
    secret: Annotated[bool, typer.Option("--secret", help="client_secret_basic instead of a key pair")] = False,
) -> None:
    """Register an agency (as the admin client) and write its credentials file."""
    path = credentials_path(short_name)
    if path.exists():
        raise typer.BadParameter(f"{path} exists already")
    body: dict[str, Any] = {"name": name, "kind": kind, "country": country, "scopes": scope or []}
    key: ECKey | None = None
    if secret:
        body["generate_secret"] = True
    else:
        key = ECKey.generate_key("P-256", private=True)
        public = dict(key.as_dict(private=False))
        public.update({"kid": key.thumbprint(), "use": "sig", "alg": "ES256"})
        body["jwks"] = {"keys": [public]}
    created = _call("POST", "/agencies", json_body=body)
    token_url = load_credentials("admin")["token_url"]
    credentials: dict[str, Any] = {"name": short_name, "agency_id": created["id"], "client_id": created["client_id"]}
    if key is not None:
        credentials["private_key_pem"] = key.as_pem(private=True).decode()
    else:
        credentials["client_secret"] = created["client_secret"]
    credentials.update({"token_url": token_url, "scopes": created["scopes"]})
    _write_private(path, credentials)
    print(json.dumps({"agency_id": created["id"], "client_id": created["client_id"], "credentials": str(path)}))


def agency_list(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """List the registered agencies."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = _call("GET", "/agencies", params={"limit": 500, **({"cursor": cursor} if cursor else {})})
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = Table(title="Agencies")
    for column in ("id", "name", "kind", "country", "status", "scopes"):
        table.add_column(column)
    for item in items:
        table.add_row(item["id"], item["name"], item["kind"], item["country"], item["status"],
                      " ".join(item["scopes"]))
    Console().print(table)


def agency_suspend(
    agency_id: Annotated[str, typer.Argument(help="the agency id")],
    reactivate: Annotated[bool, typer.Option("--reactivate", help="lift a suspension")] = False,
) -> None:
    """Suspend an agency: its token requests fail at once, its open referrals are cancelled."""
    result = _call("PATCH", f"/agencies/{agency_id}", json_body={"status": "active" if reactivate else "suspended"})
    print(json.dumps({"agency_id": result["id"], "status": result["status"]}))


def token(
    as_: Annotated[str, typer.Option("--as", help="credentials name: admin, iom, unhcr, ...")],
    scope: Annotated[list[str] | None, typer.Option("--scope", help="a scope to ask for (repeat)")] = None,
) -> None:
    """Print an access token for a demo client (client credentials grant, private_key_jwt)."""
    print(fetch_token(load_credentials(as_), scope))


def keys_rotate(
    drop_previous: Annotated[bool, typer.Option(
        "--drop-previous", help="the current key may be compromised: stop publishing it at once")] = False,
    retire_previous: Annotated[bool, typer.Option(
        "--retire-previous", help="no new key; stop publishing the previous one (after a token lifetime)")] = False,
    activate_in: Annotated[float, typer.Option(
        "--activate-in", help="seconds the new key is published before it signs (resource servers refetch "
                              "the JWKS at most every 30 s)")] = 60.0,
    out: Annotated[Path | None, typer.Option(
        help="where to write the new private JWK set (default: REFNET_REGISTRY_SIGNING_KEY_FILE, else the "
             "local stack's key file)")] = None,
) -> None:
    """Rotate the registry's token-signing key; the previous key stays in the JWKS.

    Works on the registry's database (REFNET_REGISTRY_DATABASE_URL, else the local stack's), so running
    registries sign with the new key at once; then writes the key file (new key first, previous kept) that
    a restarted registry loads.
    """
    from services.registry.oauth import signing_key_file_content
    from services.registry.service import (
        destroy_expired_private_keys,
        published_signing_keys,
        retire_previous_signing_key,
        rotate_signing_key,
    )
    from shared.db import make_engine, make_sessionmaker, unit_of_work

    settings, database_url = settings_and_database()
    ring = kek_ring(settings)
    key_file = out or (Path(settings.signing_key_file) if settings.signing_key_file else None)
    if key_file is None:
        local = refnet_home() / "keys" / "registry-signing-key.jwks.json"
        key_file = local if local.exists() else None

    async def rotate() -> tuple[str, list[tuple[str, str]]]:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with unit_of_work(make_sessionmaker(engine)) as session:
                if retire_previous:
                    await retire_previous_signing_key(session)
                else:
                    await rotate_signing_key(session, ring.current, keep_previous=not drop_previous,
                                             activate_in_seconds=0 if drop_previous else activate_in)
                await destroy_expired_private_keys(session, settings.signing_key_grace_seconds)
                keys = await published_signing_keys(session, ring)
            return keys[0][0], keys
        finally:
            await engine.dispose()

    kid, keys = asyncio.run(rotate())
    if key_file is not None:
        _write_text_private(key_file, signing_key_file_content(keys))
    print(json.dumps({"newest_kid": kid, "published_kids": [k for k, _ in keys],
                      "key_file": str(key_file) if key_file else None}))




def keys_rotate_kek(
    new_kek_file: Annotated[Path | None, typer.Option(
        help="a file holding the new KEK (base64 of 32 bytes); generated when omitted")] = None,
) -> None:
    """Re-wrap the registry's signing keys (and the staff's TOTP secrets, the identity providers' client
    secrets) under a new key-encryption key; the KEK file is replaced.

    The new KEK is staged beside the current one first (<kek file>.new), where a running registry also
    looks for it, so tokens keep being issued during the rotation; an interrupted rotation resumes with it.
    """
    from services.registry.service import count_signing_keys_not_under, rewrap_signing_keys
    from services.registry.service.federation import rewrap_client_secrets
    from services.registry.service.people import rewrap_totp_secrets
    from shared.db import make_engine, make_sessionmaker, unit_of_work
    from shared.kek import STAGED_SUFFIX, KeyEncryptionKey, KeyRing, write_key_file

    settings, database_url = settings_and_database()
    old = kek_ring(settings)
    key_file = Path(settings.kek_file)
    staged = Path(str(key_file) + STAGED_SUFFIX)
    if new_kek_file is not None:
        new = KeyEncryptionKey.from_file(new_kek_file)
    else:
        new = KeyEncryptionKey.from_file(staged) if staged.exists() else KeyEncryptionKey.generate()
    write_key_file(staged, new)
    ring = KeyRing(new, (old.current, *old.previous))

    async def rewrap() -> tuple[int, int]:
        engine = make_engine(database_url, pool_size=1)
        sessions = make_sessionmaker(engine)
        try:
            async with unit_of_work(sessions) as session:
                count = await rewrap_signing_keys(session, ring)
                count += (await rewrap_totp_secrets(session, ring))[0]  # the staff's second factors too
                count += (await rewrap_client_secrets(session, ring))[0]  # and the identity providers' secrets
            await asyncio.to_thread(staged.replace, key_file)
            # Keys a running registry wrapped under the old KEK while we worked: one more sweep.
            async with unit_of_work(sessions) as session:
                count += await rewrap_signing_keys(session, ring)
                totp_count, totp_left = await rewrap_totp_secrets(session, ring)
                idp_count, idp_left = await rewrap_client_secrets(session, ring)
                count += totp_count + idp_count
                left = await count_signing_keys_not_under(session, new) + totp_left + idp_left
        finally:
            await engine.dispose()
        return count, left

    count, left = asyncio.run(rewrap())
    print(json.dumps({"rewrapped": count, "kek_id": new.key_id, "left_under_other_keks": left,
                      "kek_file": str(key_file)}))
    console.print("keep the old KEK escrowed while backups taken before this rotation exist")
    if left:
        raise typer.Exit(1)


def _write_text_private(path: Path, content: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.replace(tmp, path)


def bootstrap_platform(
    credentials_dir: Annotated[Path, typer.Option(
        "--credentials-dir", envvar="REFNET_BOOTSTRAP_CREDENTIALS_DIR",
        help="where the clients' credentials files are written (mounted as secrets afterwards)")],
) -> None:
    """Create the platform clients -- the first administrator (``admin``) and the referral service's own
    client (``referral-service``) -- and write their credentials files. Idempotent: a second run with the
    same directory changes nothing and says so."""
    from deploy.seed import bootstrap_platform as run
    from services.registry.settings import RegistrySettings

    settings = RegistrySettings()
    # Services reach the registry by its internal address; the assertion names the issuer's endpoint.
    token_url = settings.registry_url.rstrip("/") + "/oauth/token"
    outcome = asyncio.run(run(settings.database_url, credentials_dir, token_url, settings.token_url))
    for name, what in outcome.items():
        console.print(f"{name}: {what} ({credentials_dir / (name + '.json')})")
    if all(what == "unchanged" for what in outcome.values()):
        console.print("the platform is bootstrapped already: nothing changed")


def agency_broker_user(
    agency_id: Annotated[str, typer.Argument(help="the agency's id (agy_...)")],
    compose: Annotated[bool, typer.Option(help="Kafka CLI commands for compose instead of a KafkaUser")] = False,
    namespace: Annotated[str, typer.Option()] = "refnet",
) -> None:
    """The agency's broker user, reading only its delivery topic: a Strimzi KafkaUser to apply (its Secret
    then holds the password), or with --compose the Kafka CLI commands (PASSWORD in the environment)."""
    from services.registry.broker_access import kafka_cli_commands, kafka_user_manifest

    try:
        out = "\n".join(kafka_cli_commands(agency_id)) if compose else kafka_user_manifest(agency_id,
                                                                                          namespace=namespace)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(out)


# --- staff (issue #20): on the registry's database directly, like `keys`: the operator's way in before any
# agency admin exists, and the way back when an agency's last admin is locked out.



async def _agency_of(session: Any, reference: str) -> Any:
    from services.registry.store import people as store

    agency = await store.agency_by_reference(session, reference)
    if agency is None:
        raise typer.BadParameter(f"no agency {reference!r} (an agency id or short name)")
    return agency



def staff_invite(
    agency: Annotated[str, typer.Option(help="the agency's id or short name")],
    login: Annotated[str, typer.Option(help="the person's login inside the agency (not an e-mail address)")],
    role: Annotated[list[str], typer.Option("--role", help="caseworker, supervisor, agency_admin or auditor "
                                                            "(repeat)")],
) -> None:
    """Invite a person into an agency's staff; prints their one-time link (hand it over yourself)."""
    from datetime import UTC, datetime

    from services.registry.service import people
    from shared.errors import Problem

    settings, _ = settings_and_database()

    async def work(session: Any) -> dict[str, Any]:
        found = await _agency_of(session, agency)
        person = await people.add_person(session, found, login, list(role))
        token, expires = await people.issue_link(session, person, "invite", settings.invite_lifetime_seconds,
                                                 datetime.now(UTC))
        return {"person_id": person.id, "agency_id": found.id, "link": people.enrol_link(settings, token),
                "expires_at": expires.isoformat()}

    try:
        print(json.dumps(run_in_registry(work)))
    except Problem as problem:
        raise typer.BadParameter(problem_text(problem)) from None


def staff_reset(
    agency: Annotated[str, typer.Option(help="the agency's id or short name")],
    login: Annotated[str, typer.Option(help="the person's login inside the agency")],
) -> None:
    """Reset a person's sign-in (password, second factor, lockout, sessions); prints a new one-time link."""
    from datetime import UTC, datetime

    from services.registry.service import people
    from services.registry.store import people as store

    settings, _ = settings_and_database()

    async def work(session: Any) -> dict[str, Any]:
        found = await _agency_of(session, agency)
        person = await store.person_by_login(session, found.id, login, for_update=True)
        if person is None:
            raise typer.BadParameter(f"{found.id} has no person with the login {login!r}")
        now = datetime.now(UTC)
        await people.reset_person(session, settings.source, person, now)
        token, expires = await people.issue_link(session, person, "reset", settings.invite_lifetime_seconds, now)
        return {"person_id": person.id, "agency_id": found.id, "link": people.enrol_link(settings, token),
                "expires_at": expires.isoformat()}

    print(json.dumps(run_in_registry(work)))


def staff_code(
    login: Annotated[str, typer.Argument(help="a demo person's login, e.g. iom-caseworker")],
) -> None:
    """The current TOTP code of a person whose credentials file `make run` wrote
    ($REFNET_HOME/credentials/people/<login>.json): signing in as a demo person without an authenticator app.
    Real people keep their second factor on their own device; this reads only the local stack's files."""
    import pyotp

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", login):
        raise typer.BadParameter("a login is lower-case letters, digits, '.', '_' and '-'")
    path = refnet_home() / "credentials" / "people" / f"{login}.json"
    try:
        secret = json.loads(path.read_text())["totp_secret"]
    except (OSError, ValueError, KeyError, TypeError):
        raise typer.BadParameter(f"no person's credentials file with a TOTP secret at {path}") from None
    try:
        totp = pyotp.TOTP(secret)
        code = totp.now()
    except (ValueError, TypeError):
        raise typer.BadParameter(f"the TOTP secret in {path} is not a base32 secret of 16 bytes or more") from None
    left = totp.interval - int(time.time()) % totp.interval
    print(f"{code}  (good for {left} s more, once)")


def staff_client_add(
    client_id: Annotated[str, typer.Option("--client-id", help="e.g. refnet-console")],
    redirect_uri: Annotated[list[str], typer.Option("--redirect-uri", help="an exact redirect URI (repeat)")],
    name: Annotated[str, typer.Option(help="a display name")] = "RefNet console",
    post_logout_uri: Annotated[list[str] | None, typer.Option(
        "--post-logout-uri", help="where RP-initiated logout may return to (repeat)")] = None,
    confidential: Annotated[bool, typer.Option(
        "--confidential", help="a client secret (client_secret_basic) besides PKCE; printed once")] = False,
) -> None:
    """Register (or update) a first-party OpenID Connect client: public with PKCE unless --confidential."""
    from services.registry.oauth import generate_secret, hash_secret
    from services.registry.service import people

    secret = generate_secret() if confidential else None

    async def work(session: Any) -> str:
        try:
            return await people.register_client(session, client_id, name, list(redirect_uri),
                                                list(post_logout_uri or []), hash_secret(secret) if secret else None)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None

    outcome: dict[str, Any] = {"client_id": client_id, "outcome": run_in_registry(work)}
    if secret:
        outcome["client_secret"] = secret
    print(json.dumps(outcome))


def register(app: typer.Typer, keys: typer.Typer) -> None:
    staff_app = typer.Typer(help="Agencies' staff and first-party sign-in clients.", no_args_is_help=True)
    staff_app.command("invite")(staff_invite)
    staff_app.command("reset")(staff_reset)
    staff_app.command("code")(staff_code)
    client_app = typer.Typer(help="First-party OpenID Connect clients (the console).", no_args_is_help=True)
    client_app.command("add")(staff_client_add)
    staff_app.add_typer(client_app, name="client")
    from deploy.commands.federation import idp_app  # agencies' own identity providers (issue #20 part 5)

    staff_app.add_typer(idp_app(), name="idp")
    app.add_typer(staff_app, name="staff")
    bootstrap_app = typer.Typer(help="First start of a production platform.", no_args_is_help=True)
    bootstrap_app.command("platform")(bootstrap_platform)
    app.add_typer(bootstrap_app, name="bootstrap")
    agency_app = typer.Typer(help="Agencies (OAuth clients) in the registry.", no_args_is_help=True)
    agency_app.command("add")(agency_add)
    agency_app.command("list")(agency_list)
    agency_app.command("suspend")(agency_suspend)
    agency_app.command("broker-user")(agency_broker_user)
    app.add_typer(agency_app, name="agency")
    app.command("token")(token)
    keys.command("rotate")(keys_rotate)
    keys.command("rotate-kek")(keys_rotate_kek)
