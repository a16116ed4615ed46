"""The directory in the Open Referral HSDS 3.0 schema: a service with its organization, locations and taxonomy
term, as ``/hsds/services`` answers it.

HSDS 3.0 types its optional properties as plain strings or numbers, so a property RefNet has no value for is
left out rather than sent as ``null`` (tests/integration/registry/test_hsds_documents.py validates the answers
against the published schemas). One known departure: HSDS declares every ``id`` a UUID; RefNet's ids are its
own (``svc_...``, ``agy_...``) so that a service has one id in both APIs."""

from __future__ import annotations

from typing import Any

from services.registry.store.search import ServiceRecord
from services.registry.store.tables import Agency, Service
from services.registry.views import service_out


def hsds_organization(agency: Agency | None) -> dict[str, Any] | None:
    """The agency as an HSDS organization (public profile only)."""
    if agency is None:
        return None
    return {"id": agency.id, "name": agency.name, "description": agency.kind, "legal_status": agency.kind}


def hsds_service(service: Service | ServiceRecord, agency: dict[str, Any] | None,
                 accept_language: str | None) -> dict[str, Any]:
    """One service in the HSDS 3.0 ``service`` schema (with its organization, locations and taxonomy)."""
    out = service_out(service, accept_language)
    term_id = f"refnet:{service.taxonomy}"
    return _present({
        "id": service.id,
        "organization_id": service.agency_id,
        "name": out.name,
        "description": out.description,
        "status": "active" if service.status == "active" else "inactive",
        "email": service.contact.get("email"),
        "url": service.contact.get("url"),
        "minimum_age": service.eligibility.get("min_age"),
        "maximum_age": service.eligibility.get("max_age"),
        "languages": [{"id": f"{service.id}:{lang}", "service_id": service.id, "code": lang}
                      for lang in service.languages],
        "service_areas": [{"id": f"{service.id}:{c}", "service_id": service.id, "name": c,
                           "extent_type": "text", "extent": c} for c in service.countries],
        "phones": [{"id": f"{service.id}:phone", "service_id": service.id, "number": service.contact["phone"],
                    "type": "voice"}] if service.contact.get("phone") else [],
        "schedules": [{"id": f"{service.id}:hours", "service_id": service.id,
                       "description": service.hours}] if service.hours else [],
        "capacities": [{"id": f"{service.id}:capacity", "service_id": service.id, "available":
                        service.capacity_available, "maximum": service.capacity_total,
                        "unit": {"id": "places", "name": "places"},
                        "description": service.capacity_status, "updated": service.updated_at}],
        "attributes": [{"id": f"{service.id}:{service.taxonomy}", "link_id": service.id,
                        "link_type": "service", "link_entity": "service", "taxonomy_term_id": term_id,
                        "taxonomy_term": {"id": term_id, "code": service.taxonomy, "name": out.taxonomy_label,
                                          "description": out.taxonomy_label,
                                          "parent_id": f"refnet:{service.taxonomy.split('.')[0]}"
                                          if "." in service.taxonomy else None,
                                          "taxonomy": "refnet", "taxonomy_id": "refnet"}}],
        "service_at_locations": [
            {"id": f"{service.id}:{loc.id}", "service_id": service.id, "location_id": loc.id,
             "location": {"id": loc.id, "location_type": "physical", "name": loc.name,
                          "latitude": loc.latitude, "longitude": loc.longitude,
                          "addresses": [{"id": f"{loc.id}:address", "location_id": loc.id,
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
