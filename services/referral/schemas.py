"""referral's request models (pydantic): what a POST body or a query may hold, checked before a use case runs.

Answers are built by the use cases (``service/views.py`` and friends) as plain JSON objects.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, model_validator

from services.referral import domain
from services.referral.events import OVERDUE, state_event_type
from shared import reference
from shared.idempotency import IdempotencyKey
from shared.text import FreeText, Line

# Opaque ids: letters, digits and a few separators, bounded (they end up in events and logs).
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")]


def _taxonomy(code: str) -> str:
    if not reference.is_taxonomy_code(code):
        raise ValueError("not a service taxonomy code")
    return code


def _unique(values: list[domain.DataCategory]) -> list[domain.DataCategory]:
    if len(set(values)) != len(values):
        raise ValueError("categories must not repeat")
    return values


Taxonomy = Annotated[str, AfterValidator(_taxonomy)]


class CreateReferral(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_id: Id
    to_agency: Id | None = None
    service_id: Id | None = None
    pathway: domain.Pathway
    service_type: Taxonomy | None = None
    priority: domain.Priority
    reason: FreeText = Field(min_length=1, max_length=4000)  # personal: sealed under the case's key
    # max_length: pydantic then refuses a long list at once instead of validating (and reporting) every item.
    shared_categories: Annotated[list[domain.DataCategory], AfterValidator(_unique)] = Field(
        min_length=1, max_length=len(domain.DataCategory))
    idempotency_key: IdempotencyKey | None = None

    @model_validator(mode="after")
    def _recipient_named(self) -> CreateReferral:
        if self.to_agency is None and self.service_id is None:
            raise ValueError("name the recipient: to_agency or service_id")
        if self.service_id is None and self.service_type is None:
            raise ValueError("service_type is required unless service_id is given")
        return self


class Transition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Line = Field(min_length=1, max_length=32)
    reason_code: Line | None = Field(default=None, min_length=1, max_length=64)
    note: FreeText | None = Field(default=None, max_length=4000)  # personal: sealed under the case's key


# --- webhooks -------------------------------------------------------------------------------------------------

EVENT_TYPES = frozenset({f"org.refnet.{state_event_type(s)}" for s in domain.Status} | {f"org.refnet.{OVERDUE}"})


def _event_types(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    full = [v if v.startswith("org.refnet.") else "org.refnet." + v for v in values]
    unknown = [v for v in full if v not in EVENT_TYPES]
    if unknown:
        raise ValueError("unknown event type; use referral.<state>.v1 or referral.overdue.v1")
    return sorted(set(full))


class NewSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(max_length=2048)
    event_types: Annotated[list[str] | None, AfterValidator(_event_types)] = Field(default=None, max_length=20)
