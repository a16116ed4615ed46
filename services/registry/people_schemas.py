"""Request and response bodies of the registry's staff accounts and OpenID Connect provider (issue #20)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.text import Line

_PERSON = "person-0f4c2a9e8b7d4c1e9a6b3d2f1e0c9b8a"
_AGENCY = "agy_3f2a9c1d7e5b4a60"


class StaffInvite(BaseModel):
    """A person to invite into the agency's staff."""

    model_config = ConfigDict(extra="forbid")

    login: Line = Field(..., min_length=2, max_length=64, description=(
        "The person's login inside the agency: an opaque identifier (lower-case letters, digits, '.', '_', "
        "'-'), never an e-mail address. The person types it, with the agency, to sign in."),
        examples=["cw-0142"])
    roles: list[Line] = Field(..., min_length=1, max_length=4, description=(
        "The person's roles: caseworker, supervisor, agency_admin, auditor (auditor only in an oversight "
        "agency). Caseworkers, supervisors and auditors must enrol a second factor (TOTP)."),
        examples=[["caseworker"]])


class StaffMember(BaseModel):
    """A person of the agency's staff (no secret, no password: only whether they are set)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., description="The person's id: the `sub` of their tokens and the acting user of their "
                                     "acts in the audit log.", examples=[_PERSON])
    agency_id: str = Field(..., description="The agency the person works for.", examples=[_AGENCY])
    login: str = Field(..., description="The person's login inside the agency.", examples=["cw-0142"])
    roles: list[str] = Field(..., description="The person's roles.", examples=[["caseworker"]])
    status: str = Field(..., description="`invited` until the person has used their link, then `active`.",
                        examples=["active"])
    second_factor: bool = Field(..., description="Whether the person has enrolled a TOTP second factor.",
                                examples=[True])
    locked: bool = Field(..., description="Whether the account is locked after repeated failed sign-ins "
                                          "(until the lock ends or a reset).", examples=[False])
    created_at: datetime = Field(..., description="When the person was invited.",
                                 examples=["2026-12-03T16:40:00Z"])


class StaffList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[StaffMember] = Field(..., description="The agency's staff, oldest first.")


class StaffLink(BaseModel):
    """A one-time link: hand it to the person over a channel you trust. It is shown once, never stored."""

    model_config = ConfigDict(extra="forbid")

    person: StaffMember = Field(..., description="The person the link is for.")
    link: str = Field(..., description="The one-time link to set a password and enrol the second factor. "
                                       "Single use; any earlier link of the person stops working.",
                      examples=["https://registry.example.org/staff/enrol?invite=Zm9vYmFy..."])
    expires_at: datetime = Field(..., description="When the link stops working.",
                                 examples=["2026-12-06T16:40:00Z"])


class UserInfo(BaseModel):
    """OpenID Connect userinfo of the signed-in person."""

    model_config = ConfigDict(extra="forbid")

    sub: str = Field(..., description="The person's id.", examples=[_PERSON])
    agency: str = Field(..., description="The person's agency.", examples=[_AGENCY])
    roles: list[str] = Field(..., description="The person's roles.", examples=[["caseworker"]])
    preferred_username: str = Field(..., description="The person's login inside the agency.",
                                    examples=["cw-0142"])


class OpenIDConfiguration(BaseModel):
    """OpenID Connect Discovery 1.0 metadata of the registry's provider."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(..., description="The issuer: `iss` of every token.", examples=["https://registry.example.org"])
    authorization_endpoint: str = Field(..., description="Where a person signs in (code flow with PKCE S256).",
                                        examples=["https://registry.example.org/oauth/authorize"])
    token_endpoint: str = Field(..., description="Codes and refresh tokens for tokens.",
                                examples=["https://registry.example.org/oauth/token"])
    userinfo_endpoint: str = Field(..., description="The signed-in person's claims.",
                                   examples=["https://registry.example.org/oauth/userinfo"])
    end_session_endpoint: str = Field(..., description="RP-initiated logout.",
                                      examples=["https://registry.example.org/oauth/end_session"])
    jwks_uri: str = Field(..., description="The signing keys of ID and access tokens.",
                          examples=["https://registry.example.org/.well-known/jwks.json"])
    response_types_supported: list[str] = Field(..., description="Only the authorization code flow.",
                                                examples=[["code"]])
    response_modes_supported: list[str] = Field(..., description="The code comes back in the query.",
                                                examples=[["query"]])
    grant_types_supported: list[str] = Field(..., description=(
        "Grants of the token endpoint: authorization_code and refresh_token for first-party clients (people), "
        "client_credentials for agencies' systems."),
        examples=[["client_credentials", "authorization_code", "refresh_token"]])
    subject_types_supported: list[str] = Field(..., description="`sub` is the same for every client.",
                                               examples=[["public"]])
    id_token_signing_alg_values_supported: list[str] = Field(..., description="ID tokens are ES256.",
                                                             examples=[["ES256"]])
    scopes_supported: list[str] = Field(..., description=(
        "What a client may ask for: openid for a first-party client (the access token's API scopes follow the "
        "person's roles), and the API scopes an agency's system may be given."),
        examples=[["openid", "cases:read", "registry:read"]])
    claims_supported: list[str] = Field(..., description="Claims of ID tokens and userinfo.",
                                        examples=[["sub", "agency", "roles"]])
    code_challenge_methods_supported: list[str] = Field(..., description="PKCE: S256 only, and required.",
                                                        examples=[["S256"]])
    token_endpoint_auth_methods_supported: list[str] = Field(..., description=(
        "How clients authenticate at the token endpoint: a first-party client with none (public, PKCE) or "
        "client_secret_basic; an agency's system with private_key_jwt or client_secret_basic."),
        examples=[["private_key_jwt", "client_secret_basic", "none"]])
    token_endpoint_auth_signing_alg_values_supported: list[str] = Field(..., description=(
        "Algorithms accepted for private_key_jwt assertions (RFC 7523)."), examples=[["ES256", "RS256"]])
    acr_values_supported: list[str] = Field(..., description="Authentication context classes in `acr`.",
                                            examples=[["urn:refnet:acr:mfa"]])
    amr_values_supported: list[str] = Field(..., description="Methods in `amr` (RFC 8176).",
                                            examples=[["pwd", "otp"]])
