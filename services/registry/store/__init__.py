"""registry's store: the tables (``tables``) and every query on them -- agencies, services, tokens
(``queries``), the signing keys (``signing_keys``) and the directory search (``search``)."""

from services.registry.store.tables import Agency, Base, Location, RevokedToken, Service, SigningKey, UsedAssertion

__all__ = ["Agency", "Base", "Location", "RevokedToken", "Service", "SigningKey", "UsedAssertion"]
