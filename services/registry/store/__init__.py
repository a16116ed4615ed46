"""registry's store: the tables (``tables``) and every query on them -- agencies, services, tokens
(``queries``), the signing keys (``signing_keys``) and the directory search (``search``)."""

from services.registry.store.tables import (
    Agency,
    AuthorizationCode,
    Base,
    FirstPartyClient,
    Location,
    Person,
    PersonInvite,
    RefreshToken,
    RevokedToken,
    Service,
    SigningKey,
    SignInSession,
    UsedAssertion,
)

__all__ = ["Agency", "AuthorizationCode", "Base", "FirstPartyClient", "Location", "Person", "PersonInvite",
           "RefreshToken", "RevokedToken", "Service", "SignInSession", "SigningKey", "UsedAssertion"]
