"""Authentication of callers for every RefNet service acting as an OAuth resource server.

``tokens`` validates RFC 9068 access tokens (joserfc underneath), ``keys`` keeps the issuer's JWKS,
``dependencies`` is FastAPI's side (``require_scopes``), ``problems`` the RFC 6750 answers, ``principal`` who
is calling.
"""

from shared.auth.dependencies import (
    Authenticated,
    any_scope_security,
    authenticate,
    bearer_scheme,
    get_token_validator,
    require_any_scope,
    require_scopes,
)
from shared.auth.principal import (
    ACR_MFA,
    ACTING_USER_HEADER,
    ROLES,
    Attestation,
    Principal,
    acting_user_for,
    parse_acting_user,
)
from shared.auth.problems import insufficient_scope, invalid_token, issuer_unavailable, missing_token
from shared.auth.tokens import DEFAULT_ALGORITHMS, TokenValidator

__all__ = [
    "ACR_MFA",
    "ACTING_USER_HEADER",
    "DEFAULT_ALGORITHMS",
    "ROLES",
    "Attestation",
    "Authenticated",
    "Principal",
    "TokenValidator",
    "acting_user_for",
    "any_scope_security",
    "authenticate",
    "bearer_scheme",
    "get_token_validator",
    "insufficient_scope",
    "invalid_token",
    "issuer_unavailable",
    "missing_token",
    "parse_acting_user",
    "require_any_scope",
    "require_scopes",
]
