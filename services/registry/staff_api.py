"""registry's staff routes (issue #20): an agency's admin (a person with ``staff:admin``) or the platform's
admin client invites people, lists them and resets them (a new one-time link)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path

from services.registry import domain
from services.registry.deps import Deps, deps
from services.registry.people_schemas import StaffInvite, StaffLink, StaffList, StaffMember
from services.registry.service.people import Invitation
from services.registry.store.tables import Person
from shared.auth import Principal, any_scope_security, authenticate
from shared.errors import not_found
from shared.ids import is_refnet_id

router = APIRouter(tags=["staff"])

Registry = Annotated[Deps, Depends(deps)]

# Any valid token; who may manage which agency's staff is domain.may_manage_staff's to say: the platform's
# operator (`admin`) any agency's, an agency admin (`staff:admin`) their own; anyone else gets 404. (authenticate,
# not require_scopes(): that would add a requirement of no scope to the document's alternatives below.)
Caller = Annotated[Principal, Depends(authenticate)]
#: How the staff routes say so in OpenAPI: either scope is enough (one requirement each; FastAPI would AND them).
ADMIN_OR_STAFF_ADMIN = any_scope_security("admin", "staff:admin")
AgencyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The agency's id.",
                               examples=["agy_3f2a9c1d7e5b4a60"])]
PersonId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The person's id.",
                               examples=["person-0f4c2a9e8b7d4c1e9a6b3d2f1e0c9b8a"])]


def _member(person: Person) -> StaffMember:
    locked = domain.is_locked(domain.FailureState(person.failures, person.first_failure_at, person.locked_until),
                              datetime.now(UTC))
    return StaffMember(id=person.id, agency_id=person.agency_id, login=person.login, roles=list(person.roles),
                       status=person.status, second_factor=person.totp_secret_wrapped is not None, locked=locked,
                       created_at=person.created_at)


def _link(invitation: Invitation) -> StaffLink:
    return StaffLink(person=_member(invitation.person), link=invitation.link,
                     expires_at=invitation.expires_at)


def _actor(caller: Principal) -> tuple[str | None, str | None]:
    """(client_id, acting_user) for the audit log: a person's token names the person who acted (its ``sub``);
    an agency system's names its client and the user it asserts."""
    person = getattr(caller, "person", None)  # shared/auth's reading of a person's token (issue #20 part 3)
    if person is None and not is_refnet_id(caller.client_id, "client"):
        person = caller.client_id  # before part 3, a person's token is read with its sub as the client id
    client = caller.client_id if is_refnet_id(caller.client_id, "client") else None
    return client, person or caller.acting_user


def _may_manage(caller: Principal, agency_id: str) -> None:
    if not domain.may_manage_staff(caller.scopes, caller.agency_id, agency_id):
        raise not_found("agency")


@router.post("/agencies/{agency_id}/staff", status_code=201, summary="Invite a person into the agency's staff",
             openapi_extra=ADMIN_OR_STAFF_ADMIN)
async def invite(agency_id: AgencyId, body: StaffInvite, caller: Caller, registry: Registry) -> StaffLink:
    """A new person with a one-time link to set a password and enrol the second factor. Needs the platform's
    `admin` scope, or `staff:admin` (an agency admin's token) for one's own agency; other callers get 404."""
    _may_manage(caller, agency_id)
    client_id, acting_user = _actor(caller)
    invitation = await registry.staff.invite(agency_id, body.login, body.roles, client_id=client_id,
                                             acting_user=acting_user)
    return _link(invitation)


@router.get("/agencies/{agency_id}/staff", summary="The agency's staff", openapi_extra=ADMIN_OR_STAFF_ADMIN)
async def staff(agency_id: AgencyId, caller: Caller, registry: Registry) -> StaffList:
    _may_manage(caller, agency_id)
    return StaffList(items=[_member(p) for p in await registry.staff.list(agency_id)])


@router.post("/agencies/{agency_id}/staff/{person_id}/reset", summary="Reset a person's sign-in",
             openapi_extra=ADMIN_OR_STAFF_ADMIN)
async def reset(agency_id: AgencyId, person_id: PersonId, caller: Caller, registry: Registry) -> StaffLink:
    """The person's password and second factor are cleared, the lockout lifted, their sign-ins and refresh
    tokens ended; a new one-time link (earlier ones stop working) lets them set both again."""
    _may_manage(caller, agency_id)
    client_id, acting_user = _actor(caller)
    invitation = await registry.staff.reset(agency_id, person_id, client_id=client_id, acting_user=acting_user)
    return _link(invitation)
