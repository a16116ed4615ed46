"""RefNet's id formats: what the services mint, so that a consumer can tell an id from anything typed.

A stranger's ``GET /cases/<any string>`` must not put that string into the permanent audit log: the access
record names the case only when the id is one RefNet could have issued (intake checks before looking it up or
recording anything -- an id without its format is an unknown id, 404 -- and audit refuses the record
otherwise). One definition, here, for both sides.
"""

from __future__ import annotations

import re
import uuid

_HEX32 = r"[0-9a-f]{32}"

#: kind -> the whole id, as the services mint them (``uuid4().hex``, ``secrets.token_hex``, seeded names).
ID_FORMATS: dict[str, re.Pattern[str]] = {
    "case": re.compile(rf"case-{_HEX32}"),  # intake: case-<uuid4 hex>
    "consent": re.compile(rf"consent-{_HEX32}"),  # intake: grants and withdrawals
    "override": re.compile(rf"override-{_HEX32}"),  # intake: risk-to-life overrides
    "referral": re.compile(_HEX32),  # referral: uuid4 hex
    "token": re.compile(_HEX32),  # registry: an access token's jti
    "agency": re.compile(r"agy_[a-z0-9_]{1,64}"),  # registry: agy_<16 hex>, or the seeded agy_<short name>
    "client": re.compile(r"cli_[a-z0-9_]{1,64}"),  # registry: cli_<16 hex>, or the seeded cli_<short name>
    "service": re.compile(r"svc_[a-z0-9_]{1,64}"),  # registry: a service's id
}

#: What an access record's resource type says its ``resource_id`` is.
RESOURCE_KINDS: dict[str, tuple[str, ...]] = {
    "Case": ("case",),
    "Consent": ("consent", "override"),
    "Override": ("override",),
    "Referral": ("referral",),
    "Token": ("token",),
    "Agency": ("agency",),
    "Service": ("service",),
}

#: A person acting for an agency (``X-Acting-User``): an identifier in the agency's own system, never a name.
ACTING_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+:\-]{0,127}")


def is_refnet_id(value: object, *kinds: str) -> bool:
    """Whether ``value`` is an id of one of ``kinds`` (any kind when none is named) in RefNet's formats."""
    if not isinstance(value, str) or len(value) > 80:
        return False
    patterns = [ID_FORMATS[kind] for kind in kinds] if kinds else ID_FORMATS.values()
    return any(pattern.fullmatch(value) for pattern in patterns)


def resource_id_ok(resource_type: str | None, resource_id: str) -> bool:
    """A resource id in the format its type has (any RefNet format for a type not listed)."""
    return is_refnet_id(resource_id, *RESOURCE_KINDS.get(resource_type or "", ()))


def is_acting_user(value: object) -> bool:
    return isinstance(value, str) and ACTING_USER.fullmatch(value) is not None


def new_id(prefix: str) -> str:
    """``<prefix>-<32 hex digits>``: random, so it says nothing about the person or the time."""
    return f"{prefix}-{uuid.uuid4().hex}"


def is_case_id(value: object) -> bool:
    """Is ``value`` a case id as intake mints them (``case-`` and 32 lowercase hex digits)?"""
    return is_refnet_id(value, "case")


def is_consent_id(value: object) -> bool:
    return is_refnet_id(value, "consent")


def is_override_id(value: object) -> bool:
    return is_refnet_id(value, "override")
