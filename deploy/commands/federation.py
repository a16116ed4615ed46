"""``refnet staff idp add|list|remove``: agencies' own identity providers (issue #20 part 5), on the registry's
database directly like the other staff commands (the operator's way in; the admin API,
``/identity-providers``, does the same over HTTP).

The client secret is never an argument (it would stay in the shell's history and show in ``ps``): it is read
from the environment variable ``--client-secret-env`` names, or asked for without echo.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from deploy.commands.registry_database import kek_ring, problem_text, run_in_registry, settings_and_database

SECRET_ENV = "REFNET_IDP_CLIENT_SECRET"  # noqa: S105 -- the name of a variable, not a secret


def _view(row: Any) -> dict[str, Any]:
    return {"id": row.id, "agency_id": row.agency_id, "issuer": row.issuer, "discovery_url": row.discovery_url,
            "jwks_uri": row.jwks_uri, "client_id": row.client_id, "auth_method": row.auth_method,
            "has_client_secret": row.client_secret_wrapped is not None, "scope": row.scope,
            "login_claim": row.login_claim, "roles_claim": row.roles_claim, "role_map": dict(row.role_map),
            "tenant_claim": row.tenant_claim, "tenant_value": row.tenant_value, "mfa_amr": list(row.mfa_amr),
            "mfa_acr": list(row.mfa_acr), "algorithms": list(row.algorithms)}


def idp_add(
    agency: Annotated[str, typer.Option(help="the agency's id or short name")],
    issuer: Annotated[str, typer.Option(help="the provider's issuer, exactly as its ID tokens' iss says it")],
    client_id: Annotated[str, typer.Option("--client-id", help="RefNet's client id at the provider")],
    roles_claim: Annotated[str, typer.Option(help="the claim with roles or groups, e.g. realm_access.roles, "
                                                  "roles, groups")],
    role: Annotated[list[str], typer.Option("--role", help="PROVIDER_VALUE=REFNET_ROLE, e.g. "
                                                           "refnet-caseworker=caseworker (repeat)")],
    auth_method: Annotated[str, typer.Option(help="client_secret_basic, client_secret_post or private_key_jwt "
                                                  "(signed with the registry's key)")] = "client_secret_basic",
    client_secret_env: Annotated[str, typer.Option(help="the environment variable holding the client secret "
                                                        "(asked for when unset)")] = SECRET_ENV,
    discovery_url: Annotated[str | None, typer.Option(help="default <issuer>/.well-known/openid-configuration")]
    = None,
    jwks_uri: Annotated[str | None, typer.Option(help="when not the discovery document's")] = None,
    scope: Annotated[str, typer.Option(help="the scopes asked of the provider")] = "openid",
    login_claim: Annotated[str, typer.Option(help="the claim giving the person's login")] = "preferred_username",
    tenant_claim: Annotated[str | None, typer.Option(help="a claim that must have --tenant-value (e.g. tid)")]
    = None,
    tenant_value: Annotated[str | None, typer.Option(help="the value --tenant-claim must have")] = None,
    mfa_amr: Annotated[list[str] | None, typer.Option("--mfa-amr", help="an amr value that counts as a second "
                                                                        "factor, e.g. mfa (repeat)")] = None,
    mfa_acr: Annotated[list[str] | None, typer.Option("--mfa-acr", help="an acr value that counts as a second "
                                                                        "factor (repeat)")] = None,
    algorithm: Annotated[list[str] | None, typer.Option("--algorithm", help="an accepted ID token algorithm "
                                                                            "(repeat; default RS256 PS256 ES256)")]
    = None,
) -> None:
    """Trust an agency's OpenID Connect provider for its staff; prints the trust and the redirect URI to
    register at the provider."""
    from services.registry import federation as rules
    from services.registry.service.federation import add_trust
    from shared.errors import Problem

    role_map: dict[str, str] = {}
    for entry in role:
        upstream, sep, refnet = entry.rpartition("=")
        if not sep or not upstream:
            raise typer.BadParameter(f"--role {entry!r}: PROVIDER_VALUE=REFNET_ROLE")
        role_map[upstream] = refnet
    secret: str | None = None
    if auth_method in rules.SECRET_AUTH_METHODS:
        secret = os.environ.get(client_secret_env) or typer.prompt("client secret", hide_input=True)
    trust = rules.Trust(
        issuer=issuer, discovery_url=discovery_url or rules.default_discovery_url(issuer), jwks_uri=jwks_uri,
        client_id=client_id, auth_method=auth_method, scope=scope, login_claim=login_claim,
        roles_claim=roles_claim, role_map=role_map, tenant_claim=tenant_claim, tenant_value=tenant_value,
        mfa_amr=rules.check_values(mfa_amr or []), mfa_acr=rules.check_values(mfa_acr or []),
        algorithms=tuple(algorithm or rules.DEFAULT_ALGORITHMS))
    settings, _ = settings_and_database()
    ring = kek_ring(settings)

    async def work(session: Any) -> dict[str, Any]:
        row = await add_trust(session, settings, ring, agency, trust, secret)
        return {**_view(row), "redirect_uri": settings.issuer.rstrip("/") + "/oauth/federated/callback"}

    try:
        print(json.dumps(run_in_registry(work)))
    except Problem as problem:
        raise typer.BadParameter(problem_text(problem)) from None


def idp_list(agency: Annotated[str | None, typer.Option(help="only this agency's (id or short name)")] = None,
             ) -> None:
    """The trusted identity providers (no secrets), as JSON."""
    from services.registry.store import federation as store
    from services.registry.store import people as people_store

    async def work(session: Any) -> list[dict[str, Any]]:
        agency_id = None
        if agency is not None:
            found = await people_store.agency_by_reference(session, agency)
            if found is None:
                raise typer.BadParameter(f"no agency {agency!r} (an agency id or short name)")
            agency_id = found.id
        return [_view(row) for row in await store.providers(session, agency_id)]

    print(json.dumps(run_in_registry(work)))


def idp_remove(idp_id: Annotated[str, typer.Argument(help="the trust's id (idp-...)")]) -> None:
    """Stop trusting a provider: its people's sign-ins and refresh tokens end."""
    from services.registry.service.federation import remove_trust
    from shared.errors import Problem

    settings, _ = settings_and_database()

    async def work(session: Any) -> None:
        await remove_trust(session, settings.source, idp_id)

    try:
        run_in_registry(work)
    except Problem:
        raise typer.BadParameter(f"no identity provider {idp_id!r}") from None
    print(json.dumps({"removed": idp_id}))


def idp_app() -> typer.Typer:
    app = typer.Typer(help="Agencies' own OpenID Connect providers (the registry brokers them).",
                      no_args_is_help=True)
    app.command("add")(idp_add)
    app.command("list")(idp_list)
    app.command("remove")(idp_remove)
    return app
