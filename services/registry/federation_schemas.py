"""Request and response bodies of agencies' own identity providers (issue #20 part 5)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.registry import federation as rules
from shared.text import Line

_IDP = "idp-5b0e3f1c2a9d4e8f9a1b2c3d4e5f6a7b"
_AGENCY = "agy_3f2a9c1d7e5b4a60"
_ISSUER = "https://sso.ngo.example.org/realms/staff"


class IdentityProviderIn(BaseModel):
    """An agency's OpenID Connect provider to trust for that agency's staff. Register RefNet there first as a
    confidential client with the redirect URI ``<registry>/oauth/federated/callback``."""

    model_config = ConfigDict(extra="forbid")

    agency: Line = Field(..., min_length=1, max_length=64, description="The agency's id or short name.",
                        examples=["iom"])
    issuer: Line = Field(..., max_length=500, description="The provider's issuer, exactly as its ID tokens' "
                        "`iss` says it.", examples=[_ISSUER])
    discovery_url: Line | None = Field(None, max_length=500, description=(
        "The provider's OpenID Connect discovery document; default `<issuer>/.well-known/openid-configuration`. "
        "Its `issuer` must be the one given here."), examples=[_ISSUER + "/.well-known/openid-configuration"])
    jwks_uri: Line | None = Field(None, max_length=500, description=(
        "The provider's JWKS, when it is not the discovery document's `jwks_uri`."),
        examples=[_ISSUER + "/protocol/openid-connect/certs"])
    client_id: Line = Field(..., min_length=1, max_length=255, description="The client id RefNet is registered "
                           "with at the provider.", examples=["refnet"])
    auth_method: Line = Field("client_secret_basic", description=(
        "How RefNet authenticates at the provider's token endpoint: `client_secret_basic`, `client_secret_post` "
        "or `private_key_jwt` (signed with the registry's own key: give the provider the registry's JWKS URL, "
        "`<registry>/.well-known/jwks.json`)."), examples=["client_secret_basic"])
    client_secret: Line | None = Field(None, min_length=16, max_length=500, description=(
        "The client secret (with the `client_secret_*` methods): stored wrapped under the registry's KEK, "
        "never shown again."), examples=["(the secret the provider gave)"])
    scope: Line = Field("openid", max_length=300, description="The scopes asked of the provider (with `openid`).",
                       examples=["openid profile"])
    login_claim: Line = Field("preferred_username", max_length=200, description=(
        "The claim whose value becomes the person's login at RefNet when it is a valid login (never an e-mail "
        "address); otherwise RefNet gives an opaque one. People are linked by the provider's `sub`, never by it."),
        examples=["preferred_username"])
    roles_claim: Line = Field(..., max_length=200, description=(
        "The claim carrying the person's roles or groups: a name or a dotted path (Keycloak "
        "`realm_access.roles`, Entra ID `roles`, or `groups`)."), examples=["realm_access.roles"])
    role_map: dict[Line, Line] = Field(..., description=(
        "The provider's role values and the RefNet role each gives (caseworker, supervisor, agency_admin, "
        "auditor). A person none of whose values maps is refused."),
        examples=[{"refnet-caseworker": "caseworker", "refnet-supervisor": "supervisor"}])
    tenant_claim: Line | None = Field(None, max_length=200, description=(
        "A claim that must have `tenant_value` for the agency (e.g. Entra ID's `tid`)."), examples=["tid"])
    tenant_value: Line | None = Field(None, max_length=200, description="The value `tenant_claim` must have.",
                                     examples=["72f988bf-86f1-41af-91ab-2d7cd011db47"])
    mfa_amr: list[Line] = Field(default_factory=list, max_length=20, description=(
        "The provider's `amr` values that count as a second factor (e.g. `mfa`, `otp`, `hwk`). Empty, with "
        "`mfa_acr` empty too: the provider's sign-in never counts as one, and roles that read case data "
        "(caseworker, supervisor, auditor) cannot sign in through it."), examples=[["mfa", "otp"]])
    mfa_acr: list[Line] = Field(default_factory=list, max_length=20, description=(
        "The provider's `acr` values that count as a second factor."), examples=[["gold"]])
    algorithms: list[Line] = Field(default_factory=lambda: list(rules.DEFAULT_ALGORITHMS), max_length=20,
                                   description=(
        "The ID token signature algorithms accepted (asymmetric only): a subset of "
        + ", ".join(rules.ALLOWED_ALGORITHMS) + "."), examples=[["RS256"]])


class IdentityProviderOut(BaseModel):
    """A trusted provider (its client secret never shown: only whether there is one)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., description="The trust's id.", examples=[_IDP])
    agency_id: str = Field(..., description="The agency whose staff sign in through it.", examples=[_AGENCY])
    issuer: str = Field(..., description="The provider's issuer.", examples=[_ISSUER])
    discovery_url: str = Field(..., description="Its discovery document.",
                               examples=[_ISSUER + "/.well-known/openid-configuration"])
    jwks_uri: str | None = Field(..., description="Its JWKS, when not the discovery document's.", examples=[None])
    client_id: str = Field(..., description="RefNet's client id there.", examples=["refnet"])
    auth_method: str = Field(..., description="How RefNet authenticates there.", examples=["client_secret_basic"])
    has_client_secret: bool = Field(..., description="Whether a client secret is stored.", examples=[True])
    scope: str = Field(..., description="The scopes asked.", examples=["openid"])
    login_claim: str = Field(..., description="The claim giving the login.", examples=["preferred_username"])
    roles_claim: str = Field(..., description="The claim carrying roles.", examples=["realm_access.roles"])
    role_map: dict[str, str] = Field(..., description="Provider role value to RefNet role.",
                                     examples=[{"refnet-caseworker": "caseworker"}])
    tenant_claim: str | None = Field(..., description="The tenant claim, if any.", examples=["tid"])
    tenant_value: str | None = Field(..., description="Its required value.", examples=["72f988bf-..."])
    mfa_amr: list[str] = Field(..., description="`amr` values counted as a second factor.", examples=[["mfa"]])
    mfa_acr: list[str] = Field(..., description="`acr` values counted as a second factor.", examples=[[]])
    algorithms: list[str] = Field(..., description="Accepted ID token algorithms.", examples=[["RS256"]])
    redirect_uri: str = Field(..., description="The redirect URI to register at the provider.",
                              examples=["https://registry.example.org/oauth/federated/callback"])
    created_at: datetime = Field(..., description="When the trust was registered.",
                                 examples=["2026-12-03T17:00:00Z"])


class IdentityProviderList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[IdentityProviderOut] = Field(..., description="The trusted providers, oldest first.")
