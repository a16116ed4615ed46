"""Who is calling: the caller a verified token names, and the person acting inside that agency."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from shared.errors import Problem

ACTING_USER_HEADER = "X-Acting-User"
# An acting user is an opaque id or an e-mail-like login inside the calling agency. It ends up in audit
# entries and logs, so no spaces, quotes or control characters.
ACTING_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+:\-]{0,127}")
# A RefNet person's id, as the registry mints them (shared.ids.new_id("person")), in any letter case: only the
# person's own token may name them, so a system's header that looks like one is refused.
REFNET_PERSON = re.compile(r"person-[0-9a-f]{32}", re.IGNORECASE)

#: The staff roles a person's token may carry (issue 20); scopes follow from them at the issuer.
ROLES = frozenset({"caseworker", "supervisor", "agency_admin", "auditor"})
#: The ``acr`` of a sign-in with a second factor.
ACR_MFA = "urn:refnet:acr:mfa"

#: On whose authentication the acting user is named: a person's verified token, or the agency's system
#: client asserting it (``X-Acting-User``).
Attestation = Literal["token", "system"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an agency's OAuth client, and the person acting inside that agency -- proven by the
    person's own token (``person`` set), or asserted by the agency's system (``X-Acting-User``)."""

    client_id: str
    agency_id: str
    scopes: frozenset[str]
    token_id: str
    expires_at: datetime
    acting_user: str | None = None
    #: The person a person's token names (its ``sub``); None for an agency's system token.
    person: str | None = None
    #: The person's roles in the agency (empty for a system token: roles are people's).
    roles: frozenset[str] = frozenset()
    #: How the person signed in (RFC 8176 ``amr``, and ``acr``), as the issuer says.
    amr: tuple[str, ...] = ()
    acr: str | None = None

    def has_scopes(self, *scopes: str) -> bool:
        return set(scopes) <= self.scopes

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def attested_by(self) -> Attestation | None:
        """``token`` when the acting user is the person a verified token names, ``system`` when the agency's
        system asserted it, None when nobody is named."""
        if self.person is not None:
            return "token"
        return "system" if self.acting_user is not None else None


def parse_acting_user(value: str | None) -> str | None:
    """The ``X-Acting-User`` header: optional, but if present it must be a plain, short identifier."""
    if value is None:
        return None
    if not ACTING_USER.fullmatch(value):
        raise Problem(
            400,
            "invalid-acting-user",
            f"The {ACTING_USER_HEADER} header must be 1-128 characters of letters, digits and . _ @ + : -,"
            " starting with a letter or digit.",
        )
    return value


def check_person_acts_as_themself(person: str, header: str | None) -> None:
    """A person's token: ``X-Acting-User`` may repeat the person, never name someone else (403). Also for the
    registry's own person endpoints (userinfo), which check the token themselves."""
    asserted = parse_acting_user(header)
    if asserted is not None and asserted != person:
        raise Problem(
            403,
            "acting-user-contradicts-token",
            f"The {ACTING_USER_HEADER} header names someone other than the person the access token was"
            " issued to; a person acts only as themselves.",
            title="Forbidden",
        )


def acting_user_for(principal: Principal, header: str | None) -> Principal:
    """The principal with its acting user: a person's token names its person, and a header may repeat that
    but not contradict it; a system's token names whoever its ``X-Acting-User`` header says."""
    if principal.person is not None:
        check_person_acts_as_themself(principal.person, header)
        return principal  # acting_user is the person already (the validator sets it)
    asserted = parse_acting_user(header)
    if asserted is None:
        return principal
    if REFNET_PERSON.fullmatch(asserted):
        # Otherwise an agency's system could put a RefNet person's id on an act that person never signed for.
        raise Problem(
            400,
            "acting-user-is-a-person",
            f"The {ACTING_USER_HEADER} header names a RefNet person: a person acts with their own token; a"
            " system may not name a RefNet person.",
        )
    return replace(principal, acting_user=asserted)
