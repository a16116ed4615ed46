"""The ids RefNet gives things in its HSDS 3.0 output (``/hsds/...``): HSDS declares every id a UUID, RefNet's
own ids are not (``svc_...``, ``agy_...``, taxonomy codes).

Each HSDS id is the UUIDv5 (RFC 9562) of ``"<kind>/<RefNet key>"`` under the namespace ``NAMESPACE``, e.g.
``uuid5(NAMESPACE, "service/svc_5d2e8a0c4b1f7e93")``: derived, not drawn, so the same thing has the same HSDS
id for ever, on every RefNet installation, and anyone can compute it from RefNet's id. The kind keeps a
service and an agency that happened to share an id apart. Neither the namespace nor the names may ever
change: consumers store these ids (the migration registry_0008 backfilled the stored ones with this code).
"""

from __future__ import annotations

import uuid
from typing import Final, Literal

#: RefNet's namespace for its HSDS ids (drawn once at random, 2026-12-03; fixed for ever).
NAMESPACE: Final = uuid.UUID("026940e0-7f53-4b37-994a-3a91df45373c")

#: The one taxonomy RefNet's terms belong to (GET /taxonomy).
TAXONOMY: Final = "refnet"

Kind = Literal["organization", "service", "location", "service_at_location", "address", "language",
               "service_area", "phone", "schedule", "capacity", "unit", "attribute", "taxonomy_term",
               "taxonomy"]


def hsds_id(kind: Kind, *key: str) -> uuid.UUID:
    """The HSDS id of the ``kind`` RefNet identifies by ``key`` (its id, or ids joined by ``/``: none of
    RefNet's ids, codes or language tags holds a ``/``)."""
    return uuid.uuid5(NAMESPACE, "/".join((kind, *key)))


def hsds_uuid(value: str) -> uuid.UUID | None:
    """``value`` as a UUID when it is written as one (any case, with or without hyphens); None otherwise."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
