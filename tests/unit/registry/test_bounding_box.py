"""The search's bounding box never leaves out a location within the radius (it only narrows the search)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.geo import bounding_box, distance_km

latitudes = st.floats(min_value=-89.999, max_value=89.999)
longitudes = st.floats(min_value=-180.0, max_value=180.0)


@settings(max_examples=500, deadline=None)
@given(latitudes, longitudes, st.floats(min_value=0.1, max_value=5000.0), latitudes, longitudes)
def test_every_point_within_the_radius_is_inside_the_box(lat: float, lon: float, radius: float, plat: float,
                                                         plon: float) -> None:
    if distance_km(lat, lon, plat, plon) > radius:
        return
    lat_min, lat_max, lon_min, lon_max = bounding_box(lat, lon, radius)
    assert lat_min <= plat <= lat_max
    assert lon_min <= plon <= lon_max


@settings(max_examples=300, deadline=None)
@given(latitudes, longitudes, st.floats(min_value=0.1, max_value=2000.0), st.floats(min_value=0, max_value=1),
       st.floats(min_value=0, max_value=360))
def test_points_near_the_edge_of_the_radius_are_inside_the_box(lat: float, lon: float, radius: float,
                                                               fraction: float, bearing: float) -> None:
    # A point at a given distance and bearing (spherical destination formula), often right at the edge.
    import math

    from shared.geo import EARTH_RADIUS_KM

    d = radius * fraction / EARTH_RADIUS_KM
    p1, l1, b = math.radians(lat), math.radians(lon), math.radians(bearing)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    plat, plon = math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180
    lat_min, lat_max, lon_min, lon_max = bounding_box(lat, lon, radius)
    assert lat_min <= plat <= lat_max
    assert lon_min <= plon <= lon_max


def test_a_small_radius_gives_a_small_box() -> None:
    lat_min, lat_max, lon_min, lon_max = bounding_box(41.9, 12.5, 100)
    assert 40.99 < lat_min < 41.01 and 42.79 < lat_max < 42.81
    assert 11.2 < lon_min < 11.4 and 13.6 < lon_max < 13.8


def test_across_the_antimeridian_or_a_pole_longitude_is_not_restricted() -> None:
    assert bounding_box(10.0, 179.5, 200)[2:] == (-180.0, 180.0)
    assert bounding_box(89.5, 0.0, 200)[2:] == (-180.0, 180.0)
