"""The demo world `make run` starts with: an admin client, the demo agencies, the referral service's own
client, and a directory of services across the taxonomy. Idempotent: run it as often as you like.

Each client's private key lives only in its credentials file (``.refnet/credentials/<name>.json``, mode
0600, CONTRACT.md's fields); the registry stores the public half. A credentials file that is kept is reused;
a missing one gets a fresh key, and the registry is told the new public key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey
from sqlalchemy import select

from services.registry import domain
from services.registry.schemas import ServiceCreate
from services.registry.service import Credentials, add_agency, add_service
from services.registry.store import Agency, Service
from shared import reference
from shared.db import make_engine, make_sessionmaker, unit_of_work

SOURCE = "/refnet/registry"
CLIENT_SCOPES = ["registry:read", "registry:write", "cases:read", "cases:write", "consent:write",
                 "referrals:read", "referrals:write", "events:read", "audit:witness"]


@dataclass(frozen=True)
class DemoClient:
    short_name: str
    name: str
    kind: str
    country: str
    scopes: tuple[str, ...]

    @property
    def agency_id(self) -> str:
        return f"agy_{self.short_name.replace('-', '_')}"

    @property
    def client_id(self) -> str:
        return f"cli_{self.short_name.replace('-', '_')}"


DEMO_CLIENTS = (
    DemoClient("admin", "RefNet operator", domain.PLATFORM_KIND, "CH", ("admin", "registry:read")),
    DemoClient("iom", "IOM - International Organization for Migration", "un_agency", "CH", tuple(CLIENT_SCOPES)),
    DemoClient("unhcr", "UNHCR - the UN Refugee Agency", "un_agency", "CH", tuple(CLIENT_SCOPES)),
    DemoClient("shelter", "Casa Sicura shelter network", "ngo", "IT", tuple(CLIENT_SCOPES)),
    DemoClient("legalaid", "Lex Humanitas legal aid", "ngo", "GR", tuple(CLIENT_SCOPES)),
    DemoClient("clinic", "Clinica Solidale", "service_provider", "IT", tuple(CLIENT_SCOPES)),
    DemoClient("oversight", "National anti-trafficking oversight office", "oversight", "IT",
               ("registry:read", "audit:read", "referrals:read", "stats:read")),
    DemoClient("referral-service", "RefNet referral service", domain.PLATFORM_KIND, "CH",
               ("cases:clearance", "registry:read")),
)

CITIES: dict[str, tuple[str, float, float, list[str]]] = {
    "Rome": ("IT", 41.9028, 12.4964, ["it", "en", "fr", "ar"]),
    "Palermo": ("IT", 38.1157, 13.3615, ["it", "en", "ar", "ti"]),
    "Turin": ("IT", 45.0703, 7.6869, ["it", "en", "fr"]),
    "Athens": ("GR", 37.9838, 23.7275, ["el", "en", "ar", "fa"]),
    "Thessaloniki": ("GR", 40.6401, 22.9444, ["el", "en", "ar"]),
    "Niamey": ("NE", 13.5116, 2.1254, ["fr", "ha", "en"]),
    "Agadez": ("NE", 16.9733, 7.9911, ["fr", "ha", "ar"]),
    "Bangkok": ("TH", 13.7563, 100.5018, ["th", "en", "my", "km"]),
    "Chiang Mai": ("TH", 18.7883, 98.9853, ["th", "en", "my"]),
}

DIRECTORY: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("iom", "avrr", ("Rome", "Athens", "Niamey", "Agadez", "Bangkok")),
    ("iom", "reintegration.livelihood", ("Niamey", "Bangkok", "Chiang Mai")),
    ("iom", "reintegration.education", ("Niamey", "Chiang Mai")),
    ("iom", "case_management", ("Rome", "Palermo", "Athens", "Agadez", "Bangkok")),
    ("iom", "family_tracing", ("Agadez", "Bangkok")),
    ("iom", "interpretation", ("Palermo", "Athens")),
    ("iom", "shelter", ("Agadez", "Niamey")),
    ("unhcr", "protection.rsd", ("Rome", "Athens", "Niamey", "Bangkok")),
    ("unhcr", "protection.resettlement", ("Niamey", "Bangkok")),
    ("unhcr", "child_protection.bia_bid", ("Rome", "Athens", "Niamey")),
    ("unhcr", "child_protection.guardianship", ("Athens",)),
    ("shelter", "shelter", ("Rome", "Palermo", "Turin")),
    ("shelter", "safety_security", ("Rome", "Palermo")),
    ("shelter", "food_nfi_cash", ("Palermo", "Turin")),
    ("shelter", "wash", ("Palermo",)),
    ("legalaid", "legal.counselling", ("Athens", "Thessaloniki", "Rome")),
    ("legalaid", "legal.representation", ("Athens", "Thessaloniki")),
    ("legalaid", "law_enforcement_liaison", ("Athens",)),
    ("clinic", "health.medical", ("Rome", "Palermo", "Turin")),
    ("clinic", "health.srh", ("Rome", "Palermo")),
    ("clinic", "mhpss", ("Rome", "Turin", "Palermo")),
)

CHILD_SERVICES = {"child_protection.bia_bid", "child_protection.guardianship", "family_tracing", "shelter",
                  "health.medical", "mhpss", "protection.rsd", "reintegration.education", "interpretation"}
ORG_NAMES = {"iom": "IOM", "unhcr": "UNHCR", "shelter": "Casa Sicura", "legalaid": "Lex Humanitas",
             "clinic": "Clinica Solidale"}


def demo_services() -> list[tuple[str, str, ServiceCreate]]:
    """(service id, agency id, body) of every demo service, deterministic."""
    out = []
    for short, taxonomy, cities in DIRECTORY:
        for city in cities:
            country, lat, lon, languages = CITIES[city]
            digest = hashlib.sha256(f"{short}/{taxonomy}/{city}".encode()).digest()
            total = 5 + digest[0] % 40
            available = digest[1] % (total + 1)
            status = "closed" if digest[2] % 11 == 0 else ("full" if available == 0 else "accepting")
            labels = reference.TAXONOMY[taxonomy]
            org = ORG_NAMES[short]
            body = ServiceCreate.model_validate({
                "taxonomy": taxonomy,
                "names": {"en": f"{org} {labels['en'].lower()} - {city}",
                          "fr": f"{org} {labels['fr'].lower()} - {city}"},
                "descriptions": {"en": f"{labels['en']} for survivors of trafficking in {city}, by {org}.",
                                 "fr": f"{labels['fr']} pour les survivants de la traite à {city}, par {org}."},
                "countries": [country], "admin_areas": [city], "languages": languages,
                "accepts_children": taxonomy in CHILD_SERVICES,
                "eligibility": {"min_age": 0 if taxonomy in CHILD_SERVICES else 18},
                "hours": "Mon-Fri 09:00-17:00" if digest[3] % 3 else "24/7",
                "contact": {"url": f"https://{short}.example.org/{city.lower().replace(' ', '-')}"},
                "capacity": {"available": 0 if status != "accepting" else available, "total": total,
                             "status": status},
                "locations": [{"name": f"{org} {city}", "city": city, "country": country,
                               "latitude": round(lat + (digest[4] - 128) / 5000, 5),
                               "longitude": round(lon + (digest[5] - 128) / 5000, 5)}],
            })
            out.append((f"svc_demo_{short}_{taxonomy.replace('.', '_')}_{city.lower().replace(' ', '_')}",
                        f"agy_{short}", body))
    return out


def _public_jwks(private_pem: str) -> dict[str, Any]:
    key = ECKey.import_key(private_pem)
    public = dict(key.as_dict(private=False))
    public.update({"kid": key.thumbprint(), "use": "sig", "alg": "ES256"})
    return {"keys": [public]}


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write a file only its owner can read (0600), replacing any previous one atomically."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _existing_private_pem(path: Path, client: DemoClient) -> str | None:
    try:
        data = json.loads(path.read_text())
        pem = data["private_key_pem"]
        ECKey.import_key(pem)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("client_id") != client.client_id:
        return None
    return str(pem)


#: The clients production needs before anything else (``refnet bootstrap platform``): the first
#: administrator, who registers the agencies, and the referral service's own client for intake's clearance.
PLATFORM_CLIENTS = tuple(c for c in DEMO_CLIENTS if c.short_name in ("admin", "referral-service"))


async def ensure_clients(sessions: Any, clients: tuple[DemoClient, ...], credentials_dir: Path,
                         token_url: str, audience: str | None = None) -> dict[str, str]:
    """Each client registered with the public key of its credentials file: ``created``, ``key updated``
    (its file was new), or ``unchanged``. A file is written only when its content changes."""
    outcome: dict[str, str] = {}
    for client in clients:
        path = credentials_dir / f"{client.short_name}.json"
        pem = _existing_private_pem(path, client) or ECKey.generate_key("P-256", private=True).as_pem(
            private=True).decode()
        jwks = _public_jwks(pem)
        async with unit_of_work(sessions) as session:
            agency = await session.get(Agency, client.agency_id)
            if agency is None:
                await add_agency(session, SOURCE, name=client.name, kind=client.kind, country=client.country,
                                 scopes=list(client.scopes), credentials=Credentials(jwks=jwks),
                                 agency_id=client.agency_id, client_id=client.client_id,
                                 short_name=client.short_name)
                outcome[client.short_name] = "created"
            elif agency.jwks != jwks:
                agency.jwks, agency.jwks_uri, agency.secret_hash = jwks, None, None
                outcome[client.short_name] = "key updated"
            else:
                outcome[client.short_name] = "unchanged"
        content = {"name": client.short_name, "agency_id": client.agency_id, "client_id": client.client_id,
                   "private_key_pem": pem, "token_url": token_url, "scopes": list(client.scopes)}
        if audience:
            content["audience"] = audience
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = None
        if current != content:
            write_private_json(path, content)
            if outcome[client.short_name] == "unchanged":
                outcome[client.short_name] = "file updated"
    return outcome


async def bootstrap_platform(database_url: str, credentials_dir: Path, token_url: str,
                             audience: str | None = None) -> dict[str, str]:
    """The platform clients only, no demo data: what a production registry needs first."""
    await asyncio.to_thread(credentials_dir.mkdir, parents=True, exist_ok=True)
    engine = make_engine(database_url, pool_size=1)
    try:
        return await ensure_clients(make_sessionmaker(engine), PLATFORM_CLIENTS, credentials_dir, token_url,
                                    audience)
    finally:
        await engine.dispose()


async def seed(database_url: str, credentials_dir: Path, token_url: str) -> None:
    engine = make_engine(database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        await ensure_clients(sessions, DEMO_CLIENTS, credentials_dir, token_url)
        async with unit_of_work(sessions) as session:
            existing = set((await session.execute(select(Service.id))).scalars().all())
            for service_id, agency_id, body in demo_services():
                if service_id not in existing:
                    await add_service(session, SOURCE, agency_id, body, service_id=service_id)
    finally:
        await engine.dispose()
