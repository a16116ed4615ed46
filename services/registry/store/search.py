"""The directory search: one SQL statement per shape of search (which filters it has), built once, and the
rows it reads (``ServiceRecord``, without the ORM's per-object bookkeeping)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Integer, Select, Text, and_, bindparam, exists, false, func, literal, or_, select, true
from sqlalchemy.dialects.postgresql import JSON, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from services.registry.hsds_ids import hsds_uuid
from services.registry.store.tables import Agency, Location, Service
from shared import geo


async def search_services(
    sessions: async_sessionmaker[AsyncSession], *, taxonomy: str | None = None, country: str | None = None,
    language: str | None = None, accepts_children: bool | None = None, accepting: bool | None = None,
    point: tuple[float, float] | None = None, radius_km: float | None = None, q: str | None = None,
    agency_id: str | None = None, modified_after: datetime | None = None,
    offset: int = 0, limit: int = 50, count: bool = False,
) -> tuple[list[tuple[ServiceRecord, float | None]], int | None]:
    """Active services of active agencies matching every filter given; by distance when ``point``; with the
    total of matches when ``count``."""
    shape = SearchShape(taxonomy=bool(taxonomy), country=bool(country), language=bool(language),
                        accepts_children=accepts_children, accepting=accepting, near=point is not None,
                        radius=point is not None and radius_km is not None, q=bool(q),
                        agency=agency_id is not None, modified_after=modified_after is not None)
    params: dict[str, Any] = {"offset": offset, "limit": limit}
    if agency_id is not None:
        # RefNet's agency id or the organization's HSDS id (services/registry/hsds_ids.py).
        params.update(agency_id=agency_id, agency_hsds_id=hsds_uuid(agency_id))
    if modified_after is not None:
        params["modified_after"] = modified_after
    if taxonomy:
        params.update(taxonomy=taxonomy, taxonomy_like=_like_prefix(taxonomy),
                      taxonomy_root=taxonomy.split(".", 1)[0])
    if country:
        params["countries"] = [country]
    if language:
        params["languages"] = [language]
    if q:
        params["q_pattern"] = "%" + _escape_like(q) + "%"
    if point is not None:
        params.update(lat=point[0], lon=point[1])
        if radius_km is not None:
            lat_min, lat_max, lon_min, lon_max = geo.bounding_box(point[0], point[1], radius_km)
            params.update(radius_km=radius_km, lat_min=lat_min, lat_max=lat_max, lon_min=lon_min,
                          lon_max=lon_max)
    page_statement, count_statement = _search_statements(shape)
    total = None
    # Core statements on the session's connection: the ORM has nothing to do here.
    async with sessions() as session:
        if count:
            async with session.begin():  # the total and the page from one snapshot
                connection = await session.connection()
                total = (await connection.execute(count_statement, params)).scalar_one()
                rows = (await connection.execute(page_statement, params)).all()
        else:
            # One statement is its own snapshot: no BEGIN/COMMIT round trips around it.
            connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            rows = (await connection.execute(page_statement, params)).all()
    return [(ServiceRecord.of(row), row[_KM]) for row in rows], total


@dataclass(frozen=True, slots=True)
class SearchShape:
    """Which filters a search has (not their values): one statement per shape, built once."""

    taxonomy: bool
    country: bool
    language: bool
    accepts_children: bool | None
    accepting: bool | None
    near: bool
    radius: bool
    q: bool
    agency: bool = False
    modified_after: bool = False


@functools.cache
def _search_statements(shape: SearchShape) -> tuple[Select[Any], Select[Any]]:
    """The page and the count statements of a search of this shape, the values left as bound parameters.

    Built once per shape and reused, so a search neither rebuilds a large expression tree nor has
    SQLAlchemy compute its cache key again (the statement object memoizes it). Columns, not ORM objects:
    the page is read in one statement, its locations aggregated as JSON.
    """
    conditions: list[ColumnElement[bool]] = [Service.status == "active", Agency.status == "active"]
    if shape.taxonomy:
        conditions.append(or_(Service.taxonomy == bindparam("taxonomy"),
                              Service.taxonomy.like(bindparam("taxonomy_like"))))
    if shape.country:
        conditions.append(Service.countries.contains(bindparam("countries", type_=Service.countries.type)))
    if shape.language:
        conditions.append(Service.languages.contains(bindparam("languages", type_=Service.languages.type)))
    if shape.accepts_children is not None:
        conditions.append(Service.accepts_children.is_(shape.accepts_children))
    if shape.accepting is True:
        conditions.append(and_(Service.capacity_status == "accepting", Service.capacity_available > 0))
    elif shape.accepting is False:
        conditions.append(or_(Service.capacity_status != "accepting", Service.capacity_available <= 0))
    if shape.q:
        pattern = bindparam("q_pattern", type_=Text)
        conditions.append(or_(_any_text_matches(Service.names, pattern),
                              _any_text_matches(Service.descriptions, pattern)))
    if shape.agency:
        conditions.append(or_(Service.agency_id == bindparam("agency_id", type_=Text),
                              Agency.hsds_id == bindparam("agency_hsds_id", type_=Agency.hsds_id.type)))
    if shape.modified_after:
        conditions.append(Service.updated_at >= bindparam("modified_after", type_=Service.updated_at.type))
    query: Any = select(*(Service.__table__.c[name] for name in _SERVICE_COLUMNS)).join(
        Agency, Agency.id == Service.agency_id)
    if shape.near:
        located = [Location.latitude.is_not(None), Location.longitude.is_not(None), *_located_filters(shape)]
        if shape.radius:
            # Only the locations in the radius's bounding box, found by the GiST index on their points
            # (migration registry_0004): distances are then computed for a few rows, not the directory.
            located.append(_location_point().op("<@")(func.box(
                func.point(bindparam("lon_min", type_=Float), bindparam("lat_min", type_=Float)),
                func.point(bindparam("lon_max", type_=Float), bindparam("lat_max", type_=Float)))))
        nearest = (
            select(Location.service_id, func.min(_haversine()).label("km"))
            .where(*located)
            .group_by(Location.service_id).subquery()
        )
        distance = nearest.c.km
        query = query.join(nearest, nearest.c.service_id == Service.id).add_columns(distance.label("km"))
        if shape.radius:
            conditions.append(distance <= bindparam("radius_km", type_=Float))
        query = query.order_by(distance, Service.id)
    else:
        query = query.add_columns(literal(None, Float).label("km")).order_by(Service.created_at, Service.id)
    query = query.where(*conditions)
    page = query.offset(bindparam("offset", type_=Integer)).limit(bindparam("limit", type_=Integer)).subquery("page")
    # The locations of the page's services only, aggregated after the LIMIT (json, not jsonb: jsonb would
    # round the coordinates to 15 digits).
    located_here = (
        select(func.coalesce(func.json_agg(aggregate_order_by(_location_json(), Location.position)),
                             literal([], JSON)))
        .where(Location.service_id == page.c.id).scalar_subquery()
    )
    page_statement = select(page, located_here.label("locations")).order_by(
        *((page.c.km, page.c.id) if shape.near else (page.c.created_at, page.c.id)))
    count_statement = select(func.count()).select_from(query.order_by(None).subquery())
    return page_statement, count_statement


@dataclass(frozen=True, slots=True)
class LocationRecord:
    """A location as the directory search reads it (what the API shows of a ``Location``)."""

    id: str
    name: str | None
    address: str | None
    city: str | None
    country: str
    latitude: float | None
    longitude: float | None


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """A service as the directory search reads it: the columns of ``Service`` and its locations, without
    the ORM's per-object bookkeeping (a search page holds up to 500 services)."""

    locations: list[LocationRecord]
    id: str
    agency_id: str
    taxonomy: str
    names: dict[str, str]
    descriptions: dict[str, str]
    countries: list[str]
    admin_areas: list[str]
    languages: list[str]
    accepts_children: bool
    eligibility: dict[str, Any]
    hours: str | None
    contact: dict[str, Any]
    capacity_available: int
    capacity_total: int
    capacity_status: str
    status: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Sequence[Any]) -> ServiceRecord:
        """From a search row: the columns ``_SERVICE_COLUMNS`` in order, ``km``, then ``locations`` (JSON
        objects). By position: looking 18 columns up by name costs more than the rest of the conversion."""
        return cls([LocationRecord(**loc) for loc in row[_KM + 1]], *row[:_KM])


#: The services' columns a search reads, in ``ServiceRecord``'s order (so that a row converts by position).
_SERVICE_COLUMNS = tuple(f.name for f in fields(ServiceRecord) if f.name != "locations")
_KM = len(_SERVICE_COLUMNS)
_LOCATION_FIELDS = tuple(f.name for f in fields(LocationRecord))


def _location_json() -> ColumnElement[Any]:
    return func.json_build_object(*(part for name in _LOCATION_FIELDS for part in (name, getattr(Location, name))))


def _located_filters(shape: SearchShape) -> list[ColumnElement[bool]]:
    """The search's filters on the copies each location keeps of its service's attributes, in the terms of
    the index ``ix_locations_search`` (migration registry_0004): near a point, active, of a taxonomy root,
    accepting. They only let the index discard locations early: the services' own columns are checked too.
    """
    # "= true" (the planner reduces it to the bare column) matches the index's predicate and its columns.
    filters: list[ColumnElement[bool]] = [Location.service_active == true()]
    if shape.taxonomy:
        filters.append(func.split_part(Location.service_taxonomy, ".", 1) == bindparam("taxonomy_root"))
        filters.append(or_(Location.service_taxonomy == bindparam("taxonomy"),
                           Location.service_taxonomy.like(bindparam("taxonomy_like"))))
    if shape.accepting is not None:
        filters.append(Location.service_accepting == (true() if shape.accepting else false()))
    return filters


def _any_text_matches(texts: Any, pattern: ColumnElement[str]) -> ColumnElement[bool]:
    """Some language's text (not a language code: the JSON keys) matches the ILIKE pattern."""
    each = func.jsonb_each_text(texts).table_valued("key", "value")
    return exists(select(literal(1)).select_from(each).where(each.c.value.ilike(pattern, escape="\\")))


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_prefix(prefix: str) -> str:
    return _escape_like(prefix) + ".%"


def _location_point() -> ColumnElement[Any]:
    """A location as a PostgreSQL point (x = longitude, y = latitude): the expression the index is on."""
    return func.point(Location.longitude, Location.latitude)


def _haversine() -> ColumnElement[float]:
    """Great-circle distance in km from the point bound as ``lat``, ``lon`` to the location."""
    lat, lon = bindparam("lat", type_=Float), bindparam("lon", type_=Float)
    dlat = func.radians(Location.latitude - lat) / 2
    dlon = func.radians(Location.longitude - lon) / 2
    a = func.power(func.sin(dlat), 2) + func.cos(func.radians(lat)) * func.cos(
        func.radians(Location.latitude)) * func.power(func.sin(dlon), 2)
    return 2 * geo.EARTH_RADIUS_KM * func.asin(func.least(1.0, func.sqrt(a)))
