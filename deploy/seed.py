"""The demo world `make run` starts with: an admin client, the demo agencies, the referral service's own
client, and a directory of services across the taxonomy. Idempotent: run it as often as you like.

Each client's private key lives only in its credentials file (``.refnet/credentials/<name>.json``, mode
0600, docs/contract.md's fields); the registry stores the public half. A credentials file that is kept is reused;
a missing one gets a fresh key, and the registry is told the new public key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey
from sqlalchemy import select

from services.registry import domain
from services.registry.schemas import ServiceCreate
from services.registry.service import Credentials, add_agency, add_service, people
from services.registry.store import Agency, Service
from services.registry.store import people as people_store
from shared import reference
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.kek import KeyRing

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


# --- people (issue #20) ---------------------------------------------------------------------------------------

#: The console (issue #21): a public client (PKCE, no secret to hand out), registered by the operator.
CONSOLE_CLIENT_ID = "refnet-console"
CONSOLE_URL = "http://127.0.0.1:8005"


@dataclass(frozen=True)
class DemoPerson:
    agency: str  # the agency's short name
    role: str

    @property
    def login(self) -> str:
        return f"{self.agency}-{self.role.replace('_', '-')}"


#: A caseworker and a supervisor in each demo agency that works cases, and an auditor at the oversight office.
DEMO_PEOPLE = tuple(
    [DemoPerson(c.short_name, role) for c in DEMO_CLIENTS if c.kind not in (domain.PLATFORM_KIND, "oversight")
     for role in ("caseworker", "supervisor")] + [DemoPerson("oversight", "auditor")])


def _existing_person_secrets(path: Path, person: DemoPerson) -> tuple[str, str] | None:
    try:
        data = json.loads(path.read_text())
        password, secret = data["password"], data["totp_secret"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("login") != person.login or not isinstance(password, str) or not isinstance(secret, str):
        return None
    return password, secret


async def ensure_people(sessions: Any, people_dir: Path, issuer: str, ring: KeyRing,
                        console_url: str = CONSOLE_URL) -> dict[str, str]:
    """Each demo person with the password and TOTP secret of their file (``people/<login>.json``, 0600): a
    kept file is reused, a missing one gets new secrets. ``created``, ``updated`` or ``unchanged``."""
    await asyncio.to_thread(people_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
    outcome: dict[str, str] = {}
    now = datetime.now(UTC)
    for demo in DEMO_PEOPLE:
        path = people_dir / f"{demo.login}.json"
        kept = _existing_person_secrets(path, demo)
        password, secret = kept or (secrets.token_urlsafe(18), people.new_totp_secret())
        async with unit_of_work(sessions) as session:
            agency = await session.get(Agency, f"agy_{demo.agency}")
            assert agency is not None, "the demo agencies are seeded first"
            person = await people_store.person_by_login(session, agency.id, demo.login, for_update=True)
            if person is None:
                person = await people.add_person(session, agency, demo.login, [demo.role])
                outcome[demo.login] = "created"
            elif (people.verify_password(password, person.password_hash) and person.totp_secret_wrapped
                  and person.totp_kek_id and people.unwrap_totp(person.totp_secret_wrapped, person.totp_kek_id,
                                                                person.id, ring) == secret):
                outcome[demo.login] = "unchanged"
            else:
                outcome[demo.login] = "updated"
            if outcome[demo.login] != "unchanged":
                people.set_credentials(person, password, secret, ring.current, now)
            content = {"login": demo.login, "agency": demo.agency, "agency_id": agency.id, "person_id": person.id,
                       "roles": [demo.role], "password": password, "totp_secret": secret, "issuer": issuer,
                       "client_id": CONSOLE_CLIENT_ID, "console": console_url}
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = None
        if current != content:
            write_private_json(path, content)
    return outcome


async def seed(database_url: str, credentials_dir: Path, token_url: str, *, kek_file: Path | None = None,
               console_url: str = CONSOLE_URL) -> None:
    """``kek_file``: the registry's key-encryption key, which the demo people's TOTP secrets are stored
    under; without it the people are not seeded."""
    engine = make_engine(database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        await ensure_clients(sessions, DEMO_CLIENTS, credentials_dir, token_url)
        async with unit_of_work(sessions) as session:
            existing = set((await session.execute(select(Service.id))).scalars().all())
            for service_id, agency_id, body in demo_services():
                if service_id not in existing:
                    await add_service(session, SOURCE, agency_id, body, service_id=service_id)
        if kek_file is not None:
            async with unit_of_work(sessions) as session:
                await people.register_client(session, CONSOLE_CLIENT_ID, "RefNet console",
                                             [console_url + "/auth/callback"], [console_url + "/"])
            ring = KeyRing.load(str(kek_file), setting="REFNET_REGISTRY_KEK_FILE")
            issuer = token_url.removesuffix("/oauth/token")
            await ensure_people(sessions, credentials_dir / "people", issuer, ring, console_url)
    finally:
        await engine.dispose()
