"""The service-provider directory: an agency's services (publish, change, withdraw, capacity) and reading and
searching them. Every change writes its event (``service.*``) to the outbox in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import events
from services.registry.schemas import CapacityIn, ServiceCreate, ServicePatch
from services.registry.service.agencies import new_id
from services.registry.store import queries
from services.registry.store.search import ServiceRecord, search_services
from services.registry.store.tables import Agency, Location, Service
from shared.db import unit_of_work
from shared.errors import Problem, invalid, not_found
from shared.outbox import add_event

#: What ``null`` sets an optional service field to in a PATCH; the other fields may not be null.
NULL_MEANS: dict[str, Any] = {"descriptions": {}, "admin_areas": [], "languages": [], "eligibility": {},
                              "hours": None, "contact": {}}


def _locations(service_id: str, items: list[Any]) -> list[Location]:
    return [
        Location(id=new_id("loc"), service_id=service_id, position=i, name=loc.name, address=loc.address,
                 city=loc.city, country=loc.country, latitude=loc.latitude, longitude=loc.longitude)
        for i, loc in enumerate(items)
    ]


async def add_service(session: AsyncSession, source: str, agency_id: str, body: ServiceCreate,
                      service_id: str | None = None) -> Service:
    """A new service and its ``service.published`` event, in the caller's transaction (also the seed's)."""
    data = body.model_dump(mode="json")
    now = datetime.now(UTC)
    service = Service(
        id=service_id or new_id("svc"), agency_id=agency_id, taxonomy=body.taxonomy, names=body.names,
        descriptions=body.descriptions or {}, countries=body.countries, admin_areas=body.admin_areas or [],
        languages=body.languages or [], accepts_children=body.accepts_children,
        eligibility=data["eligibility"] or {}, hours=body.hours, contact=data["contact"] or {},
        capacity_available=body.capacity.available, capacity_total=body.capacity.total,
        capacity_status=body.capacity.status, status="active", created_at=now, updated_at=now,
    )
    service.locations = _locations(service.id, body.locations or [])
    session.add(service)
    await session.flush()
    await emit_service(session, source, events.SERVICE_PUBLISHED, service)
    return service


def service_payload(service: Service) -> dict[str, Any]:
    first = next((loc for loc in service.locations if loc.latitude is not None), None)
    return events.ServicePayload(
        service_id=service.id, agency_id=service.agency_id, taxonomy=service.taxonomy,
        status=service.status,  # type: ignore[arg-type]
        countries=list(service.countries), languages=list(service.languages),
        accepts_children=service.accepts_children,
        capacity=events.Capacity(available=service.capacity_available, total=service.capacity_total,
                                 status=service.capacity_status),  # type: ignore[arg-type]
        location=events.Point(lat=first.latitude, lon=first.longitude)  # type: ignore[arg-type]
        if first is not None else None,
    ).model_dump(mode="json")


async def emit_service(session: AsyncSession, source: str, type_: str, service: Service) -> None:
    await add_event(session, source=source, topic=events.TOPIC, type=type_, aggregate_type="Service",
                    aggregate_id=service.agency_id, payload=service_payload(service), subject=service.id)


class Directory:
    """The directory use cases, one transaction each. Only an active agency changes its own services."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], source: str) -> None:
        self.sessions = sessions
        self.source = source

    async def _caller_agency(self, session: AsyncSession, agency_id: str) -> Agency:
        agency = await queries.agency(session, agency_id)
        if agency is None or agency.status != "active":
            raise Problem(403, "agency-not-active", "The calling agency is not registered or not active.")
        return agency

    async def _own_service(self, session: AsyncSession, agency_id: str, service_id: str) -> Service:
        await self._caller_agency(session, agency_id)
        service = await queries.service_for_update(session, service_id)
        if service is None or service.agency_id != agency_id or service.status != "active":
            raise not_found("service")
        return service

    async def create(self, agency_id: str, body: ServiceCreate) -> Service:
        async with unit_of_work(self.sessions) as session:
            await self._caller_agency(session, agency_id)
            service = await add_service(session, self.source, agency_id, body)
        return service

    async def update(self, agency_id: str, service_id: str, body: ServicePatch) -> Service:
        async with unit_of_work(self.sessions) as session:
            service = await self._own_service(session, agency_id, service_id)
            values = body.model_dump(exclude_unset=True, exclude={"locations"}, mode="json")
            for name, value in values.items():
                if value is None and name not in NULL_MEANS:
                    raise invalid(["body", name], "may not be null")
                setattr(service, name, value if value is not None else NULL_MEANS[name])
            if "locations" in body.model_fields_set:
                service.locations = _locations(service.id, body.locations or [])
            service.updated_at = datetime.now(UTC)
            await session.flush()
            await emit_service(session, self.source, events.SERVICE_UPDATED, service)
        return service

    async def withdraw(self, agency_id: str, service_id: str) -> None:
        async with unit_of_work(self.sessions) as session:
            service = await self._own_service(session, agency_id, service_id)
            service.status = "withdrawn"
            service.updated_at = datetime.now(UTC)
            await session.flush()
            await emit_service(session, self.source, events.SERVICE_WITHDRAWN, service)

    async def set_capacity(self, agency_id: str, service_id: str, body: CapacityIn) -> Service:
        async with unit_of_work(self.sessions) as session:
            service = await self._own_service(session, agency_id, service_id)
            service.capacity_available, service.capacity_total = body.available, body.total
            service.capacity_status = body.status
            service.updated_at = datetime.now(UTC)
            await session.flush()
            await emit_service(session, self.source, events.SERVICE_CAPACITY_CHANGED, service)
        return service

    async def get(self, service_id: str, *, hsds: bool = False) -> Service:
        """An active service of an active agency (404 otherwise); with ``hsds``, by its HSDS id too."""
        async with unit_of_work(self.sessions) as session:
            row = await queries.active_service(session, service_id, hsds=hsds)
        if row is None:
            raise not_found("service")
        return row

    async def search(self, *, taxonomy: str | None = None, country: str | None = None,
                     language: str | None = None, accepts_children: bool | None = None,
                     accepting: bool | None = None, point: tuple[float, float] | None = None,
                     radius_km: float | None = None, q: str | None = None, offset: int = 0, limit: int = 50,
                     count: bool = False, agency_id: str | None = None, modified_after: datetime | None = None,
                     ) -> tuple[list[tuple[ServiceRecord, float | None]], int | None]:
        """Active services of active agencies matching every filter given; by distance when ``point``."""
        return await search_services(
            self.sessions, taxonomy=taxonomy, country=country, language=language,
            accepts_children=accepts_children, accepting=accepting, point=point, radius_km=radius_km, q=q,
            offset=offset, limit=limit, count=count, agency_id=agency_id,
            modified_after=modified_after)
