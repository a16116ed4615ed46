"""How the API shows what the store holds: an agency and a service as their response models (a service in the
caller's language, from ``Accept-Language``)."""

from __future__ import annotations

from services.registry import domain
from services.registry.schemas import AgencyOut, AgencyRegistered, LocationOut, ServiceOut
from services.registry.store.search import ServiceRecord
from services.registry.store.tables import Agency, Service
from shared import reference


def agency_out(agency: Agency) -> AgencyOut:
    return AgencyOut(
        id=agency.id, client_id=agency.client_id, name=agency.name, kind=agency.kind, country=agency.country,
        status=agency.status, scopes=sorted(agency.scopes),
        auth_method="client_secret_basic" if agency.secret_hash else "private_key_jwt",
        created_at=agency.created_at, updated_at=agency.updated_at,
    )


def registered(agency: Agency, secret: str | None) -> AgencyRegistered:
    return AgencyRegistered(**agency_out(agency).model_dump(), client_secret=secret)


def service_out(service: Service | ServiceRecord, accept_language: str | None,
                distance: float | None = None) -> ServiceOut:
    language = domain.pick_language(accept_language, service.names)
    description_language = language if language in service.descriptions else domain.pick_language(
        accept_language, service.descriptions)
    return ServiceOut(
        id=service.id, agency_id=service.agency_id, taxonomy=service.taxonomy,
        taxonomy_label=reference.TAXONOMY[service.taxonomy][
            domain.pick_language(accept_language, reference.TAXONOMY[service.taxonomy]) or "en"],
        language=language, name=domain.localized(service.names, language),
        description=domain.localized(service.descriptions, description_language),
        names=service.names, descriptions=service.descriptions, countries=service.countries,
        admin_areas=service.admin_areas, languages=service.languages,
        accepts_children=service.accepts_children, eligibility=service.eligibility, hours=service.hours,
        contact=service.contact,
        capacity={"available": service.capacity_available, "total": service.capacity_total,  # type: ignore[arg-type]
                  "status": service.capacity_status},
        locations=[LocationOut(id=loc.id, name=loc.name, address=loc.address, city=loc.city,
                               country=loc.country, latitude=loc.latitude, longitude=loc.longitude)
                   for loc in service.locations],
        status=service.status, distance_km=round(distance, 3) if distance is not None else None,
        created_at=service.created_at, updated_at=service.updated_at,
    )
