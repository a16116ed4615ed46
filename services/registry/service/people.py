"""Staff accounts (issue #20): invitations and resets (one-time links), setting a password (argon2id) and
enrolling the second factor (TOTP, RFC 6238). The rules are domain.py's; this is their mechanics and
transactions. No password, code, secret or link token is ever logged or recorded: only ids.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import domain, events
from services.registry.keyvault import SigningKeyVault
from services.registry.settings import RegistrySettings
from services.registry.store import federation as federation_store
from services.registry.store import people as store
from services.registry.store import queries
from services.registry.store.tables import Agency, FirstPartyClient, Person, PersonInvite
from shared.access import AccessRecord, record_access
from shared.db import unit_of_work
from shared.errors import Problem, invalid, not_found
from shared.ids import new_id
from shared.kek import KeyEncryptionKey, KeyRing
from shared.outbox import add_event
from shared.times import utc_text

log = structlog.get_logger("refnet.registry.people")

#: argon2-cffi's defaults are argon2id with RFC 9106's second recommended parameter set.
_HASHER = PasswordHasher()
# Verified when the login is unknown, so the answer takes as long as for a known one.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
TOTP_ISSUER = "RefNet"


# --- mechanics ---------------------------------------------------------------------------------------------


def digest(secret: str) -> str:
    """How a link, session, code or refresh token is stored and looked up: 256-bit random values, so a plain
    SHA-256 (no salt, no slow hash) keeps them from a database reader without slowing each request."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret_token() -> tuple[str, str]:
    """(token, its digest)."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, stored: str | None) -> bool:
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def _totp_context(person_id: str) -> bytes:
    # Bound to the person: a wrapped secret copied onto another person's row does not open.
    return b"refnet-registry:totp:" + person_id.encode()


def wrap_totp(secret: str, person_id: str, kek: KeyEncryptionKey) -> bytes:
    return kek.wrap(secret.encode(), _totp_context(person_id))


def unwrap_totp(wrapped: bytes, kek_id: str, person_id: str, ring: KeyRing) -> str:
    return ring.by_id(kek_id).unwrap(wrapped, _totp_context(person_id)).decode()


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, login: str, agency_short: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=f"{login}@{agency_short}", issuer_name=TOTP_ISSUER)


def accepted_totp_step(secret: str, code: str, last_step: int | None, now: datetime) -> int | None:
    """The time step ``code`` is valid for (this step or one either side, for clock drift), if later than the
    last step accepted: a code is good once (RFC 6238 section 5.2)."""
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    moment = now.timestamp()
    for offset in (-1, 0, 1):
        at = moment + offset * totp.interval
        if hmac.compare_digest(totp.at(at), code):
            step = totp.timecode(datetime.fromtimestamp(at, UTC))
            return step if last_step is None or step > last_step else None
    return None


def enrol_link(settings: RegistrySettings, token: str) -> str:
    return settings.issuer.rstrip("/") + "/staff/enrol?invite=" + token


# --- steps in the caller's transaction (also the seed's and the CLI's) -------------------------------------


async def add_person(session: AsyncSession, agency: Agency, login: str, roles: list[str]) -> Person:
    reason = domain.check_login(login)
    if reason:
        raise invalid(["body", "login"], reason)
    reason = domain.check_roles(agency.kind, roles)
    if reason:
        raise invalid(["body", "roles"], reason)
    if await store.person_by_login(session, agency.id, login) is not None:
        raise Problem(409, "login-taken", "The agency already has a person with this login.")
    person = Person(id=new_id("person"), agency_id=agency.id, login=login, roles=list(roles), status="invited",
                    failures=0)
    session.add(person)
    await session.flush()
    return person


async def issue_link(session: AsyncSession, person: Person, purpose: str, lifetime_seconds: int,
                     now: datetime) -> tuple[str, datetime]:
    """A new one-time link for ``person`` (earlier ones stop working): (token, expiry)."""
    await store.spend_open_invites(session, person.id, now)
    token, token_hash = new_secret_token()
    expires = now + timedelta(seconds=lifetime_seconds)
    session.add(PersonInvite(token_hash=token_hash, person_id=person.id, purpose=purpose, expires_at=expires))
    await session.flush()
    return token, expires


def set_credentials(person: Person, password: str, totp_secret: str | None, kek: KeyEncryptionKey,
                    now: datetime) -> None:
    """The person's password and second factor, replacing any earlier ones; the account is active."""
    reason = domain.check_password(password, person.login)
    if reason:
        raise invalid(["body", "password"], reason)
    person.password_hash = hash_password(password)
    if totp_secret is None:
        person.totp_secret_wrapped = person.totp_kek_id = None
    else:
        person.totp_secret_wrapped = wrap_totp(totp_secret, person.id, kek)
        person.totp_kek_id = kek.key_id
    person.totp_last_step = None
    person.status = "active"
    person.failures, person.first_failure_at, person.locked_until = 0, None, None
    person.updated_at = now


async def revoke_access(session: AsyncSession, source: str, person: Person, client_id: str,
                        tokens: list[tuple[str, datetime]]) -> None:
    """Revoke a person's access tokens (jti, expiry) still alive, and tell the resource servers (they validate
    tokens locally: token.revoked is how they learn to refuse these)."""
    for jti, expires in tokens:
        if await queries.revoke(session, jti, expires):
            payload = events.TokenRevokedPayload(jti=jti, agency_id=person.agency_id, client_id=client_id,
                                                 expires_at=utc_text(expires))
            await add_event(session, source=source, topic=events.TOPIC, type=events.TOKEN_REVOKED,
                            aggregate_type="Token", aggregate_id=person.agency_id, payload=payload.model_dump(),
                            subject=jti)


async def reset_person(session: AsyncSession, source: str, person: Person, now: datetime) -> None:
    """Password and second factor forgotten, lockout lifted, every sign-in and refresh token ended: the
    person starts again with a new link."""
    person.password_hash = None
    person.totp_secret_wrapped = person.totp_kek_id = None
    person.totp_last_step = None
    person.status = "invited"
    person.failures, person.first_failure_at, person.locked_until = 0, None, None
    person.updated_at = now
    ended = await store.end_sessions_of(session, person.id, now)
    for client_id, tokens in (await store.revoke_refresh_tokens(session, now, session_ids=ended)).items():
        await revoke_access(session, source, person, client_id, tokens)


# --- use cases ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invitation:
    person: Person
    link: str
    expires_at: datetime


@dataclass(frozen=True)
class Enrolment:
    """What the enrolment page shows: the login, and the TOTP secret to add to an authenticator app."""

    login: str
    agency_name: str
    totp_secret: str | None
    totp_uri: str | None


class Staff:
    """Staff accounts' use cases, one transaction each."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: RegistrySettings,
                 vault: SigningKeyVault) -> None:
        self.sessions = sessions
        self.settings = settings
        self.source = settings.source
        self.vault = vault

    async def _agency(self, session: AsyncSession, agency_id: str) -> Agency:
        agency = await queries.agency(session, agency_id)
        if agency is None or agency.kind == domain.PLATFORM_KIND:
            raise not_found("agency")
        return agency

    async def _record(self, session: AsyncSession, action: str, agency: Agency, person: Person,
                      client_id: str | None, acting_user: str | None) -> None:
        await record_access(session, source=self.source, record=AccessRecord(
            action=action, outcome="success", agency=agency.id, client_id=client_id, acting_user=acting_user,
            resource_type="Agency", resource_id=agency.id, details={"staff_id": person.id, "roles": person.roles}))

    async def invite(self, agency_id: str, login: str, roles: list[str], *, client_id: str | None,
                     acting_user: str | None) -> Invitation:
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            agency = await self._agency(session, agency_id)
            person = await add_person(session, agency, login, roles)
            token, expires = await issue_link(session, person, "invite", self.settings.invite_lifetime_seconds, now)
            await self._record(session, "staff.invite", agency, person, client_id, acting_user)
        log.info("staff_invited", agency=agency_id, person=person.id)
        return Invitation(person, enrol_link(self.settings, token), expires)

    async def list(self, agency_id: str) -> list[Person]:
        async with unit_of_work(self.sessions) as session:
            await self._agency(session, agency_id)
            return await store.people_of(session, agency_id)

    async def reset(self, agency_id: str, person_id: str, *, client_id: str | None,
                    acting_user: str | None) -> Invitation:
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            agency = await self._agency(session, agency_id)
            person = await store.person(session, person_id, for_update=True)
            if person is None or person.agency_id != agency.id:
                raise not_found("person")
            if await federation_store.is_brokered(session, person.id):
                # A local password and TOTP would let them in past their agency's provider, where the agency
                # disables and resets its people.
                raise Problem(409, "person-signs-in-elsewhere", "This person signs in through their agency's own "
                              "identity provider; reset or disable them there.")
            await reset_person(session, self.source, person, now)
            token, expires = await issue_link(session, person, "reset", self.settings.invite_lifetime_seconds, now)
            await self._record(session, "staff.reset", agency, person, client_id, acting_user)
        log.info("staff_reset", agency=agency_id, person=person.id)
        return Invitation(person, enrol_link(self.settings, token), expires)

    async def _open_link(self, session: AsyncSession, token: str, now: datetime) -> tuple[PersonInvite, Person]:
        link = await store.invite(session, digest(token), for_update=True) if token else None
        if link is None or link.used_at is not None or link.expires_at <= now:
            # One answer for unknown, used and expired links: a link says nothing about who it was for.
            raise Problem(404, "invite-not-usable", "This link is not valid: it was used already, has expired "
                                                    "or was replaced. Ask your agency's administrator for a new one.")
        person = await store.person(session, link.person_id, for_update=True)
        assert person is not None  # person_invites.person_id references people
        return link, person

    async def enrolment(self, token: str) -> Enrolment:
        """The enrolment page's content; the TOTP secret it offers is kept with the link until confirmed."""
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            link, person = await self._open_link(session, token, now)
            agency = await queries.agency(session, person.agency_id)
            assert agency is not None
            secret: str | None = None
            if domain.needs_second_factor(person.roles) or link.totp_secret_wrapped is not None:
                if link.totp_secret_wrapped is None or link.totp_kek_id is None:
                    secret = new_totp_secret()
                    link.totp_secret_wrapped = wrap_totp(secret, person.id, self.vault.current)
                    link.totp_kek_id = self.vault.current.key_id
                else:
                    secret = unwrap_totp(link.totp_secret_wrapped, link.totp_kek_id, person.id,
                                             self.vault.ring_for(link.totp_kek_id))
            return Enrolment(person.login, agency.name, secret,
                             totp_uri(secret, person.login, agency.short_name or agency.id) if secret else None)

    async def enrol(self, token: str, password: str, code: str | None) -> str:
        """Set the password and confirm the second factor with its first code; the link is spent. Returns the
        person's id."""
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            link, person = await self._open_link(session, token, now)
            secret: str | None = None
            if domain.needs_second_factor(person.roles):
                if link.totp_secret_wrapped is None or link.totp_kek_id is None:
                    raise Problem(409, "totp-not-offered", "Open the link first: it shows the second factor to "
                                                           "add to your authenticator app.")
                secret = unwrap_totp(link.totp_secret_wrapped, link.totp_kek_id, person.id,
                                             self.vault.ring_for(link.totp_kek_id))
                step = accepted_totp_step(secret, code or "", None, now)
                if step is None:
                    raise invalid(["body", "code"], "the code does not match the second factor shown; "
                                                    "check the authenticator app's clock")
            set_credentials(person, password, secret, self.vault.current, now)
            if secret is not None:
                person.totp_last_step = step
            link.used_at = now
            agency = await queries.agency(session, person.agency_id)
            assert agency is not None
            await record_access(session, source=self.source, record=AccessRecord(
                action="staff.enrol", outcome="success", agency=agency.id, acting_user=person.id,
                resource_type="Agency", resource_id=agency.id,
                details={"staff_id": person.id, "purpose": link.purpose, "second_factor": secret is not None}))
        log.info("staff_enrolled", person=person.id)
        return person.id


async def register_client(session: AsyncSession, client_id: str, name: str, redirect_uris: list[str],
                          post_logout_redirect_uris: list[str], secret_hash: str | None = None) -> str:
    """A first-party OpenID Connect client (the console), added or updated: ``created``, ``updated`` or
    ``unchanged``. Public (PKCE only) without ``secret_hash``."""
    if not domain.LOGIN.fullmatch(client_id):
        raise ValueError("a client id is 2-64 lower-case letters, digits, '.', '_' or '-'")
    for uri in [*redirect_uris, *post_logout_redirect_uris]:
        if not domain.redirect_uri_ok(uri):
            raise ValueError("a redirect URI is an absolute https URL (http only on a loopback address), "
                             "without a fragment")
    row = await store.first_party_client(session, client_id)
    if row is None:
        session.add(FirstPartyClient(client_id=client_id, name=name, redirect_uris=redirect_uris,
                                     post_logout_redirect_uris=post_logout_redirect_uris, secret_hash=secret_hash))
        return "created"
    wanted = (name, redirect_uris, post_logout_redirect_uris)
    if (row.name, list(row.redirect_uris), list(row.post_logout_redirect_uris)) == wanted and (
            secret_hash is None or row.secret_hash == secret_hash):
        return "unchanged"
    row.name, row.redirect_uris, row.post_logout_redirect_uris = wanted
    if secret_hash is not None:
        row.secret_hash = secret_hash
    return "updated"


async def rewrap_totp_secrets(session: AsyncSession, ring: KeyRing) -> tuple[int, int]:
    """A KEK rotation's part for people: every TOTP secret (enrolled, or offered on an open link) wrapped
    under ``ring.current``. Returns (re-wrapped, left under another KEK)."""
    rewrapped = 0
    for row in await store.totp_secrets_not_under(session, ring.current.key_id):
        person_id = row.id if isinstance(row, Person) else row.person_id
        assert row.totp_secret_wrapped is not None and row.totp_kek_id is not None
        secret = unwrap_totp(row.totp_secret_wrapped, row.totp_kek_id, person_id, ring)
        row.totp_secret_wrapped, row.totp_kek_id = wrap_totp(secret, person_id, ring.current), ring.current.key_id
        rewrapped += 1
    await session.flush()
    return rewrapped, len(await store.totp_secrets_not_under(session, ring.current.key_id))
