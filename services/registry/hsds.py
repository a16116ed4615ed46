"""The directory in the Open Referral HSDS 3.0 schema: a service with its organization, locations and taxonomy
term, as ``/hsds/services`` answers it.

HSDS 3.0 types its optional properties as plain strings or numbers, so a property RefNet has no value for is
left out rather than sent as ``null``; and it declares every id a UUID, so each id here is the UUID
services/registry/hsds_ids.py derives from RefNet's own id (the same for ever), not RefNet's id itself
(tests/integration/registry/test_hsds_documents.py validates the answers against the published schemas,
formats included)."""

from __future__ import annotations

from typing import Any

from services.registry.hsds_ids import TAXONOMY, hsds_id, hsds_uuid
from services.registry.store.search import ServiceRecord
from services.registry.store.tables import Agency, Service
from services.registry.views import service_out
from shared import reference


def hsds_organization(agency: Agency | None) -> dict[str, Any] | None:
    """The agency as an HSDS organization (public profile only)."""
    if agency is None:
        return None
    return {"id": hsds_id("organization", agency.id), "name": agency.name, "description": agency.kind,
            "legal_status": agency.kind}


def hsds_taxonomy_term_id(code: str) -> str:
    """The HSDS id of a RefNet taxonomy term (by its code)."""
    return str(hsds_id("taxonomy_term", code))


#: Each taxonomy term's code by its HSDS id, parents (``parent_id``) included (computed: the taxonomy is fixed,
#: shared/reference.py).
_TERM_CODES = {hsds_id("taxonomy_term", code): code
               for code in {*reference.TAXONOMY, *(code.split(".")[0] for code in reference.TAXONOMY)}}


def taxonomy_code(term_id: str) -> str | None:
    """The taxonomy code an HSDS ``taxonomy_term_id`` filter names: the term's HSDS id, ``refnet:<code>`` or a
    bare code (whether the code exists is the caller's check); None for a UUID that is no term's."""
    as_uuid = hsds_uuid(term_id)
    return _TERM_CODES.get(as_uuid) if as_uuid is not None else term_id.removeprefix(f"{TAXONOMY}:")


def is_refnet_taxonomy(taxonomy_id: str) -> bool:
    """Whether an HSDS ``taxonomy_id`` filter names RefNet's taxonomy (by name or by its HSDS id)."""
    return taxonomy_id == TAXONOMY or hsds_uuid(taxonomy_id) == hsds_id("taxonomy", TAXONOMY)


def hsds_service(service: Service | ServiceRecord, agency: dict[str, Any] | None,
                 accept_language: str | None) -> dict[str, Any]:
    """One service in the HSDS 3.0 ``service`` schema (with its organization, locations and taxonomy)."""
    out = service_out(service, accept_language)
    sid = service.id
    own = hsds_id("service", sid)
    term_id = hsds_taxonomy_term_id(service.taxonomy)
    return _present({
        "id": own,
        "organization_id": hsds_id("organization", service.agency_id),
        "name": out.name,
        "description": out.description,
        "status": "active" if service.status == "active" else "inactive",
        "email": service.contact.get("email"),
        "url": service.contact.get("url"),
        "minimum_age": service.eligibility.get("min_age"),
        "maximum_age": service.eligibility.get("max_age"),
        "languages": [{"id": hsds_id("language", sid, lang), "service_id": own, "code": lang}
                      for lang in service.languages],
        "service_areas": [{"id": hsds_id("service_area", sid, c), "service_id": own, "name": c,
                           "extent_type": "text", "extent": c} for c in service.countries],
        "phones": [{"id": hsds_id("phone", sid), "service_id": own, "number": service.contact["phone"],
                    "type": "voice"}] if service.contact.get("phone") else [],
        "schedules": [{"id": hsds_id("schedule", sid), "service_id": own,
                       "description": service.hours}] if service.hours else [],
        "capacities": [{"id": hsds_id("capacity", sid), "service_id": own, "available":
                        service.capacity_available, "maximum": service.capacity_total,
                        "unit": {"id": hsds_id("unit", "places"), "name": "places"},
                        "description": service.capacity_status, "updated": service.updated_at}],
        "attributes": [{"id": hsds_id("attribute", sid, service.taxonomy), "link_id": own,
                        "link_type": "service", "link_entity": "service", "taxonomy_term_id": term_id,
                        "taxonomy_term": {"id": term_id, "code": service.taxonomy, "name": out.taxonomy_label,
                                          "description": out.taxonomy_label,
                                          "parent_id": hsds_taxonomy_term_id(service.taxonomy.split(".")[0])
                                          if "." in service.taxonomy else None,
                                          "taxonomy": TAXONOMY, "taxonomy_id": hsds_id("taxonomy", TAXONOMY)}}],
        "service_at_locations": [
            {"id": hsds_id("service_at_location", sid, loc.id), "service_id": own,
             "location_id": hsds_id("location", loc.id),
             "location": {"id": hsds_id("location", loc.id), "location_type": "physical", "name": loc.name,
                          "latitude": loc.latitude, "longitude": loc.longitude,
                          "addresses": [{"id": hsds_id("address", loc.id),
                                         "location_id": hsds_id("location", loc.id),
                                         "address_1": loc.address or "", "city": loc.city or "",
                                         "state_province": "", "postal_code": "",
                                         "country": loc.country, "address_type": "physical"}]}}
            for loc in service.locations
        ],
        "last_modified": service.updated_at,
        "organization": agency,
    })


def _present(value: Any) -> Any:
    """The document without its ``None`` values, at every depth (HSDS omits what it does not know)."""
    if isinstance(value, dict):
        return {key: _present(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_present(item) for item in value]
    return value
