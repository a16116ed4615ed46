"""The registry's use cases, one class per aggregate, each public method one transaction:

- ``agencies``: agencies and their OAuth clients (``Agencies``);
- ``authorization``: the OAuth 2.0 authorization server -- client authentication, tokens, introspection,
  revocation (``Authorization``);
- ``signing_keys``: the token-signing keys' lifecycle and the JWKS (``SigningKeys``, and the steps the
  ``refnet keys`` commands and the seed run in a transaction of their own);
- ``directory``: the service-provider directory (``Directory``).
"""

from services.registry.service.agencies import Agencies, Credentials, add_agency, new_id
from services.registry.service.authorization import Authorization
from services.registry.service.directory import Directory, add_service
from services.registry.service.signing_keys import (
    SigningKeys,
    count_signing_keys_not_under,
    destroy_expired_private_keys,
    ensure_signing_key,
    published_jwks,
    published_signing_keys,
    retire_previous_signing_key,
    rewrap_signing_keys,
    rotate_signing_key,
    signing_key,
    sync_signing_keys,
)
from services.registry.store.search import ServiceRecord

__all__ = [
    "Agencies", "Authorization", "Credentials", "Directory", "ServiceRecord", "SigningKeys", "add_agency",
    "add_service", "count_signing_keys_not_under", "destroy_expired_private_keys", "ensure_signing_key", "new_id",
    "published_jwks", "published_signing_keys", "retire_previous_signing_key", "rewrap_signing_keys",
    "rotate_signing_key", "signing_key", "sync_signing_keys",
]
