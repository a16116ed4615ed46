"""The public contract as files, generated from the code: ``refnet contract export``.

- ``docs/events/<type>.schema.json``: a JSON Schema (draft 2020-12) of each event type's payload, from the
  pydantic model the emitting service builds it with, with an example.
- ``docs/asyncapi.yaml``: an AsyncAPI 3.0.0 document of the Kafka topics, their CloudEvents headers, keys
  and messages, each message's payload a ``$ref`` to its schema file.
- ``docs/events.md``: the same for people: how to read the events, and a table of topics and types.
- ``docs/openapi/<service>.json``: each service's OpenAPI document, from its FastAPI app (no database).

The output is a pure function of the code, byte for byte (fixed example ids and times, sorted JSON keys,
YAML in a fixed order), so tests/contract can compare the committed files with a fresh rendering and fail
when a model, a route or the type list changed without the documents.
"""

from __future__ import annotations

import importlib
import json
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI
from pydantic import BaseModel
from structlog.testing import capture_logs

from services.intake import events as intake_events
from services.referral import events as referral_events
from services.registry import events as registry_events
from shared import contract
from shared.access import AccessRecord
from shared.envelope import ERROR_HEADER, full_type
from shared.kafka import dlq_topic
from shared.settings import SERVICE_NAMES
from shared.topics import ALL_TOPICS, AUDIT_ACCESS, DELIVERY_PREFIX, INTAKE_EVENTS, REFERRAL_EVENTS, REGISTRY_EVENTS

REPO = Path(__file__).resolve().parents[1]
DOCS = Path("docs")
EVENTS_DIR = DOCS / "events"
OPENAPI_DIR = DOCS / "openapi"
ASYNCAPI_FILE = DOCS / "asyncapi.yaml"
EVENTS_GUIDE = DOCS / "events.md"

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_SUFFIX = ".schema.json"
#: Schemas are named by URN: RefNet publishes no schema host, and a URL nobody serves would mislead.
SCHEMA_ID_PREFIX = "urn:refnet:schema:"
BINDING_VERSION = "0.5.0"  # Kafka bindings of AsyncAPI 3.0.0
#: The document's version is the project's (types carry their own .vN), read from the source tree rather
#: than from installed metadata, which can lag behind it.
CONTRACT_VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]

#: The payload model of each contract type. shared.contract names the types; the services own the models.
PAYLOAD_MODELS: Mapping[str, type[BaseModel]] = {
    **registry_events.EMITTED,
    **intake_events.EMITTED,
    **referral_events.EMITTED,
    contract.ACCESS_RECORDED: AccessRecord,
}


def schema_path(type_: str) -> Path:
    return EVENTS_DIR / f"{type_}{SCHEMA_SUFFIX}"


# Made-up ids in the services' own formats, and a fixed time: examples hold no personal data and never change.
_AGENCY = "agy_3f9c2b7e1d4a6058"
_CLIENT = "cli_8b1e4d2c7a9f3065"
_RECIPIENT = "agy_7a0d5c3e9b2f4186"
_SERVICE = "svc_5d2a8e1f9c3b7046"
_CASE = "case-6f1d3c9a2b8e4f70a1c2d3e4f5a6b7c8"
_CONSENT = "consent-0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a59"
_REFERRAL = "4e8f2a6c0b1d3e5f7a9c8b6d4f2e0a1c"
_USER = "user-0042"
_JTI = "9d3f0a7c1e5b4a2f8c6d0e1b3a5f7c9d"
_WHEN = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
_EXAMPLE_IDS = {"the case id": _CASE, "the referral id": _REFERRAL, "the agency id": _AGENCY,
                "the service id": _SERVICE, "the token id (jti)": _JTI}


# --- what each topic is --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """One topic (or family of topics) as an integrator needs to know it."""

    id: str
    address: str
    title: str
    types: tuple[str, ...]
    sources: tuple[str, ...]  # the CloudEvents sources that publish here
    key: str  # what the Kafka key is
    example_key: str
    description: str
    subject: Callable[[str], str | None]  # per type: what ce_subject holds (None: may be absent)


def _registry_subject(type_: str) -> str:
    if type_ in contract.AGENCY_TYPES:
        return "the agency id"
    return "the token id (jti)" if type_ == contract.TOKEN_REVOKED else "the service id"


CHANNELS: tuple[Channel, ...] = (
    Channel(
        id="registryEvents", address=REGISTRY_EVENTS, title="Registry: agencies and services",
        types=contract.REGISTRY_TYPES, sources=("registry",), example_key=_AGENCY,
        key="the agency id (for service events: the agency that offers the service; for a revoked token: "
        "the agency it was issued to), so one agency's events stay in order",
        description="Agencies registered, changed or suspended, the services they publish in the directory, "
        "with capacity, and revoked access tokens. Public profile only: never keys, secrets or contacts.",
        subject=_registry_subject,
    ),
    Channel(
        id="intakeEvents", address=INTAKE_EVENTS, title="Intake: cases and consent",
        types=contract.INTAKE_TYPES, sources=("intake",), example_key=_CASE,
        key="the case id, so one case's events stay in order",
        description="Case lifecycle and consent versions, as non-identifying facts: ids, enumerations, dates "
        "and booleans. The personal data stays in intake, readable over HTTP only where consent permits.",
        subject=lambda _type: "the case id",
    ),
    Channel(
        id="referralEvents", address=REFERRAL_EVENTS, title="Referral: every referral's lifecycle",
        types=contract.REFERRAL_TYPES, sources=("referral",), example_key=_CASE,
        key="the case id, so one case's events stay in order",
        description="One event per state a referral reaches (FHIR Task statuses), and `referral.overdue.v1` "
        "when a referral is still requested after its `due_at`. Never the free-text reason or note.",
        subject=lambda _type: "the referral id",
    ),
    Channel(
        id="delivery", address=DELIVERY_PREFIX + "{agency_id}", title="Delivery to one agency's case system",
        types=contract.REFERRAL_TYPES, sources=("referral",), example_key=_REFERRAL,
        key="the referral id, so one referral's events stay in order",
        description="The referral events an agency is party to (as sender or recipient), for its case system "
        "to subscribe to; the same payloads as on refnet.referral.events. Created on first use.",
        subject=lambda _type: "the referral id",
    ),
    Channel(
        id="auditAccess", address=AUDIT_ACCESS, title="Access records",
        types=contract.ACCESS_TYPES, sources=SERVICE_NAMES, example_key=_CASE,
        key="the case id; for records not about a case, the agency id, else the client id",
        description="Every read of case data (granted or refused), every token issued or refused, every "
        "consent action, written by the service that saw it. The audit service logs each one.",
        subject=lambda _type: None,
    ),
)

#: The topics RefNet consumes, each with a dead-letter topic (delivery topics are for case systems only).
DLQ_OF = ALL_TOPICS


# --- examples -------------------------------------------------------------------------------------------------



def _example(type_: str) -> BaseModel:
    """A payload of ``type_`` built with its model (so it is valid by construction) from made-up ids."""
    if type_ in contract.AGENCY_TYPES:
        return registry_events.AgencyPayload(
            agency_id=_AGENCY, client_id=_CLIENT, name="Example Protection Network", kind="ngo", country="KE",
            status="suspended" if type_ == contract.AGENCY_SUSPENDED else "active",
            scopes=["cases:read", "cases:write", "referrals:read", "referrals:write"])
    if type_ in contract.SERVICE_TYPES:
        withdrawn = type_ == contract.SERVICE_WITHDRAWN
        return registry_events.ServicePayload(
            service_id=_SERVICE, agency_id=_AGENCY, taxonomy="shelter",
            status="withdrawn" if withdrawn else "active", countries=["KE"], languages=["en", "sw"],
            accepts_children=False,
            capacity=registry_events.Capacity(available=0 if withdrawn else 3, total=12,
                                              status="closed" if withdrawn else "accepting"),
            location=registry_events.Point(lat=-1.2921, lon=36.8219))
    if type_ == contract.TOKEN_REVOKED:
        return registry_events.TokenRevokedPayload(jti=_JTI, agency_id=_AGENCY, client_id=_CLIENT,
                                                   expires_at="2026-05-04T09:45:00Z")
    actor: dict[str, Any] = {"agency": _AGENCY, "client_id": _CLIENT, "acting_user": _USER, "attested_by": "system"}
    if type_ in (contract.CASE_REGISTERED, contract.CASE_UPDATED, contract.CASE_CLOSED):
        return intake_events.CaseEvent(
            case_id=_CASE, **actor, purpose="case_management",
            status="closed" if type_ == contract.CASE_CLOSED else "active",
            data_categories=["contact", "demographics", "documents", "health", "identity", "notes",
                             "protection_needs", "trafficking_experience"],
            changed=["fear_of_return"] if type_ == contract.CASE_UPDATED else [])
    if type_ == contract.CASE_ERASED:
        return intake_events.CaseErased(case_id=_CASE, **actor)
    if type_ == contract.CONSENT_GRANTED:
        return intake_events.ConsentGranted(
            case_id=_CASE, **actor, consent_id=_CONSENT, consent_version=1, grantor="self",
            provisions=[intake_events.ProvisionSummary(
                purpose="referral", recipient_agency=_RECIPIENT,
                data_categories=["identity", "demographics", "protection_needs"], decision="permit")],
            valid_from=_WHEN, valid_until=datetime(2027, 12, 31, tzinfo=UTC))
    if type_ == contract.CONSENT_WITHDRAWN:
        return intake_events.ConsentWithdrawn(case_id=_CASE, **actor, consent_id=_CONSENT, consent_version=2,
                                              withdrawn_version=1)
    if type_ == contract.CONSENT_OVERRIDDEN:
        # The approving person is the actor, as their own token names them; the requester is another person.
        approver = "person-2f4e6a8c0b1d3f5e7a9c1b3d5f7e9a0c"
        return intake_events.ConsentOverridden(
            case_id=_CASE, **(actor | {"acting_user": approver, "attested_by": "token"}),
            override_id="override-1b2c3d4e5f60718293a4b5c6d7e8f901", recipient_agency=_RECIPIENT, approver=approver,
            requested_by="person-7a1c3e5b9d0f2a4c6e8b0d2f4a6c8e1b", approved_at=_WHEN,
            valid_until=datetime(2026, 5, 7, 9, 30, tzinfo=UTC))
    if type_ in contract.REFERRAL_TYPES:
        state = type_.split(".")[1]
        system = state in ("cancelled", "overdue")  # RefNet itself acted: no agency, no user
        return referral_events.ReferralEvent(
            referral_id=_REFERRAL, case_id=_CASE, from_agency=_AGENCY, to_agency=_RECIPIENT,
            status="requested" if state == "overdue" else state, pathway="protection",
            service_type="protection.rsd", priority="urgent",
            shared_categories=["identity", "demographics", "protection_needs"], consent_id=_CONSENT,
            reason_code={"rejected": "no-capacity", "failed": "other", "cancelled": "consent-withdrawn"}.get(state),
            due_at=datetime(2026, 5, 5, 9, 30, tzinfo=UTC),
            agency=None if system else (_AGENCY if state == "requested" else _RECIPIENT),
            acting_user=None if system else _USER, attested_by=None if system else "system")
    if type_ == contract.ACCESS_RECORDED:
        return AccessRecord(
            action="case.read", outcome="success", agency=_RECIPIENT, client_id=_CLIENT, acting_user=_USER,
            purpose="referral", resource_type="Case", resource_id=_CASE, case_id=_CASE,
            details={"categories": ["demographics", "identity", "protection_needs"], "consent_id": _CONSENT,
                     "consent_version": 1, "role": "recipient"})
    raise KeyError(f"no example payload for {type_!r}: add one to deploy/contract.py")


def example_payloads() -> dict[str, dict[str, Any]]:
    """An example payload of every contract type, as it travels (JSON types)."""
    return {type_: _example(type_).model_dump(mode="json") for type_ in contract.ALL_TYPES}


def _example_headers(channel: Channel, type_: str) -> dict[str, str]:
    subject = channel.subject(type_)
    return {
        "ce_specversion": "1.0",
        "ce_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"refnet:{channel.id}:{type_}")),
        "ce_source": f"/refnet/{'intake' if type_ == contract.ACCESS_RECORDED else channel.sources[0]}",
        "ce_type": full_type(type_),
        "ce_time": "2026-05-04T09:30:00Z",
        "ce_subject": _EXAMPLE_IDS[subject] if subject else _CASE,  # an access record: the case it read
        "ce_partitionkey": channel.example_key,
        "content-type": "application/json",
    }


# --- JSON Schemas ------------------------------------------------------------------------------------------------


def _topics_carrying(type_: str) -> list[str]:
    return [channel.address for channel in CHANNELS if type_ in channel.types]


def event_schema(type_: str) -> dict[str, Any]:
    model = PAYLOAD_MODELS[type_]
    # Serialization mode: the schema of what model_dump(mode="json") puts on the wire, not of what it accepts.
    schema = model.model_json_schema(mode="serialization")
    topics = " and ".join(f"`{topic}`" for topic in _topics_carrying(type_))
    about = (f"{contract.SUMMARIES[type_]}\n\nThe `data` (Kafka message value, `content-type: application/json`) "
             f"of a CloudEvent of type `{full_type(type_)}` on {topics}. Generated from "
             f"`{model.__module__}.{model.__qualname__}` by `refnet contract export`.")
    if schema.get("description"):
        about += "\n\n" + str(schema["description"])
    schema.update({
        "$schema": SCHEMA_DIALECT,
        "$id": f"{SCHEMA_ID_PREFIX}{full_type(type_)}",
        "title": full_type(type_),
        "description": about,
        "examples": [_example(type_).model_dump(mode="json")],
    })
    return schema


# --- AsyncAPI ------------------------------------------------------------------------------------------------------

GUIDE = """\
How to read the RefNet event contract.

- **Transport.** Apache Kafka (any Kafka-protocol broker). Every event is a CloudEvents 1.0 event in Kafka
  *binary* content mode: the attributes are message headers (`ce_specversion`, `ce_id`, `ce_source`,
  `ce_type`, `ce_time`, `ce_subject`, `ce_partitionkey`), `content-type` is `application/json`, and the
  message value is the event's `data`: the payload, a JSON object.
- **Types.** `ce_type` is `org.refnet.<type>`, e.g. `org.refnet.referral.accepted.v1`; the `.vN` suffix is
  the payload's version. Each topic carries the types listed for its channel below, and nothing else.
- **Keys and order.** The Kafka key (also in `ce_partitionkey`) is the aggregate the event is about: the
  case id on the intake, referral and access topics, the agency id on the registry topic, the referral id on
  a delivery topic. Events with one key are in one partition, in the order they happened.
- **Delivery is at least once.** The same event may arrive more than once: deduplicate on
  (`ce_source`, `ce_id`).
- **Payloads.** Each type's payload has a JSON Schema (draft 2020-12) in `docs/events/<type>.schema.json`,
  generated from the code; each message below `$ref`s it and shows an example. Payloads carry ids,
  enumerations, dates and booleans only, never personal data: a case system that needs case data reads it
  over HTTP from intake (`docs/openapi/intake.json`), where consent is checked at the moment of the read.
  Ignore fields you do not know: a later version of a type may add some.
- **Case systems** subscribe to `refnet.delivery.<agency_id>`: the referral events their agency is party to.
  The referral service also offers them as signed webhooks and as a pull feed (`docs/openapi/referral.json`).
- **Dead letters.** `<topic>.dlq` holds what a RefNet consumer could not process, unchanged, with the
  reason in the `refnet-error` header.
- **This document is generated** (`refnet contract export`) from `shared/contract.py` and the payload models;
  tests fail when it and the code disagree.
"""

_HEADERS_REF = {"$ref": "#/components/schemas/CloudEventHeaders"}

CLOUD_EVENT_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 attributes in Kafka binary content mode (values are UTF-8 strings).",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_partitionkey",
                 "content-type"],
    "properties": {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {"type": "string", "minLength": 1,
                  "description": "Unique for its source: deduplicate on (ce_source, ce_id)."},
        "ce_source": {"type": "string", "pattern": "^/refnet/[a-z]+$",
                      "description": "The publishing service, `/refnet/<service>`."},
        "ce_type": {"type": "string", "pattern": r"^org\.refnet\.[a-z_.]+\.v[0-9]+$"},
        "ce_time": {"type": "string", "format": "date-time",
                    "description": "When the change happened (RFC 3339, UTC)."},
        "ce_subject": {"type": "string", "description": "The resource the event is about."},
        "ce_partitionkey": {"type": "string",
                            "description": "CloudEvents partitioning extension: the same as the Kafka key."},
        "content-type": {"type": "string", "const": "application/json"},
    },
}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _message_id(channel: Channel, type_: str) -> str:
    # Referral types travel on two kinds of topic with different keys: one message each.
    return f"delivery.{type_}" if channel.id == "delivery" else type_


def _message(channel: Channel, type_: str) -> dict[str, Any]:
    sources = [f"/refnet/{name}" for name in channel.sources]
    subject = channel.subject(type_)
    own: dict[str, Any] = {
        "type": "object",
        "properties": {
            "ce_type": {"const": full_type(type_)},
            "ce_source": {"enum": sources} if len(sources) > 1 else {"const": sources[0]},
        },
    }
    if subject is not None:
        own["required"] = ["ce_subject"]
        own["properties"]["ce_subject"] = {"description": _sentence(subject)}
    return {
        "name": full_type(type_),
        "title": type_,
        "summary": contract.SUMMARIES[type_],
        "contentType": "application/json",
        "headers": {"allOf": [_HEADERS_REF, own]},
        "payload": {"$ref": f"./events/{type_}{SCHEMA_SUFFIX}"},
        "bindings": {"kafka": {"key": {"type": "string", "description": _sentence(channel.key)},
                               "bindingVersion": BINDING_VERSION}},
        "examples": [{"name": type_, "headers": _example_headers(channel, type_),
                      "payload": _example(type_).model_dump(mode="json")}],
    }


def _dlq_channel_id(topic: str) -> str:
    return next(channel.id for channel in CHANNELS if channel.address == topic) + "Dlq"


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel in CHANNELS:
        channel_messages = {}
        for type_ in channel.types:
            message_id = _message_id(channel, type_)
            messages[message_id] = _message(channel, type_)
            channel_messages[type_] = {"$ref": f"#/components/messages/{message_id}"}
        body: dict[str, Any] = {
            "address": channel.address,
            "title": channel.title,
            "description": f"{channel.description}\n\nKafka key: {channel.key}.",
            "messages": channel_messages,
        }
        if "{agency_id}" in channel.address:
            body["parameters"] = {"agency_id": {
                "description": "The agency's id in the registry (`GET /agencies`), as in its access tokens."}}
        else:
            body["bindings"] = {"kafka": {"topic": channel.address, "bindingVersion": BINDING_VERSION}}
        channels[channel.id] = body
        operations[f"publish{channel.id[0].upper()}{channel.id[1:]}"] = {
            "action": "send",
            "title": f"RefNet publishes on {channel.address}",
            "channel": {"$ref": f"#/channels/{channel.id}"},
            "messages": [{"$ref": f"#/channels/{channel.id}/messages/{type_}"} for type_ in channel.types],
        }
    for topic in DLQ_OF:
        channel_id = _dlq_channel_id(topic)
        channels[channel_id] = {
            "address": dlq_topic(topic),
            "title": f"Dead letters of {topic}",
            "description": f"Messages of `{topic}` a RefNet consumer could not process (undecodable, "
            "schema-invalid, or failing after retries), unchanged, with the reason added.",
            "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
            "bindings": {"kafka": {"topic": dlq_topic(topic), "bindingVersion": BINDING_VERSION}},
        }
        operations[f"deadLetter{channel_id[0].upper()}{channel_id[1:-3]}"] = {
            "action": "send",
            "title": f"A RefNet consumer dead-letters a message of {topic}",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/deadLetter"}],
        }
    messages["deadLetter"] = {
        "name": "dead-letter",
        "title": "Dead letter",
        "summary": "A message a consumer gave up on: its original key, headers and value, plus the reason.",
        "headers": {
            "type": "object",
            "description": "The original message's headers, plus these two.",
            "required": [ERROR_HEADER, "refnet-consumer"],
            "properties": {
                ERROR_HEADER: {"type": "string", "description": "Why the message could not be processed."},
                "refnet-consumer": {"type": "string", "description": "The consumer group that gave up."},
            },
        },
        "payload": {"description": "The original message value, unchanged (it may not be JSON)."},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "RefNet events",
            "version": CONTRACT_VERSION,
            "description": GUIDE,
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The Kafka-protocol broker `refnet up` starts on one machine (embedded Tansu).",
                "bindings": {"kafka": {"bindingVersion": BINDING_VERSION}},
            },
            "production": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "An Apache Kafka cluster (KRaft); partitions and replicas of each topic are in "
                "deploy/k8s/kafka-topics.yaml.",
                "variables": {"bootstrap": {"description": "The deployment's `REFNET_KAFKA_BOOTSTRAP`."}},
                "bindings": {"kafka": {"bindingVersion": BINDING_VERSION}},
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {"CloudEventHeaders": CLOUD_EVENT_HEADERS},
            "messages": messages,
        },
    }


# --- the people's version -----------------------------------------------------------------------------------


def events_guide() -> str:
    lines = ["# RefNet events", "",
             "Generated by `refnet contract export` from `shared/contract.py` and the payload models: do not "
             "edit by hand. The machine-readable contract is [asyncapi.yaml](asyncapi.yaml) (AsyncAPI 3.0.0).",
             "", GUIDE.replace("below", "in asyncapi.yaml").rstrip(), ""]
    for channel in CHANNELS:
        lines += [f"## `{channel.address}`", "", channel.description, "", f"Kafka key: {channel.key}.", "",
                  "| `ce_type` | `ce_subject` | what | payload schema |", "|---|---|---|---|"]
        for type_ in channel.types:
            subject = channel.subject(type_) or "the resource id, if any"
            lines.append(f"| `{full_type(type_)}` | {subject} | {contract.SUMMARIES[type_]} | "
                         f"[{type_}{SCHEMA_SUFFIX}](events/{type_}{SCHEMA_SUFFIX}) |")
        lines.append("")
    lines += ["## Dead letters", "",
              ", ".join(f"`{dlq_topic(topic)}`" for topic in DLQ_OF) + ": the original key, headers and value, "
              f"plus `{ERROR_HEADER}` (why) and `refnet-consumer` (which consumer group gave up).", ""]
    return "\n".join(lines)


# --- OpenAPI --------------------------------------------------------------------------------------------------


def service_app(service: str) -> FastAPI:
    """The service's app as production builds it; nothing connects until its lifespan starts."""
    module = importlib.import_module(f"services.{service}.app")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings = getattr(settings_module, f"{service.capitalize()}Settings")(log_json=False)
    # Building the audit app without a key file warns that checkpoints will use a throwaway key: true for
    # a server, noise for a document export, so the build's log lines are captured and dropped.
    with capture_logs():
        app: FastAPI = module.create_app(settings)
    return app


def openapi_document(service: str) -> dict[str, Any]:
    return service_app(service).openapi()


# --- files ------------------------------------------------------------------------------------------------------


def _json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the descriptions read as written; no anchors or aliases
    (a reader should not have to chase ``*id001`` for a shared header schema)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def _yaml(document: Mapping[str, Any]) -> str:
    # Keys keep the order they are built in (spec order: asyncapi, info, servers, channels, ...), which is
    # fixed by the code, so the bytes are stable without sorting the document out of its readable order.
    text: str = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    return text


def render() -> dict[Path, str]:
    """Every generated file (path relative to the repository) and its exact content."""
    missing = set(contract.ALL_TYPES) ^ set(PAYLOAD_MODELS)
    if missing:
        raise ValueError(f"types without a payload model, or models without a contract type: {sorted(missing)}")
    files: dict[Path, str] = {schema_path(type_): _json(event_schema(type_)) for type_ in contract.ALL_TYPES}
    files[ASYNCAPI_FILE] = _yaml(asyncapi_document())
    files[EVENTS_GUIDE] = events_guide()
    for service in SERVICE_NAMES:
        files[OPENAPI_DIR / f"{service}.json"] = _json(openapi_document(service))
    return files


def _generated_on_disk(root: Path) -> set[Path]:
    """The files of the generated kinds that exist now (so one for a removed type is noticed)."""
    found = {path.relative_to(root) for path in (root / EVENTS_DIR).glob(f"*{SCHEMA_SUFFIX}")}
    found |= {path.relative_to(root) for path in (root / OPENAPI_DIR).glob("*.json")}
    return found | {p for p in (ASYNCAPI_FILE, EVENTS_GUIDE) if (root / p).exists()}


@dataclass(frozen=True)
class Drift:
    changed: list[Path]  # differs from what the code produces, or missing
    stale: list[Path]  # generated earlier, no longer produced

    def __bool__(self) -> bool:
        return bool(self.changed or self.stale)


def drift(root: Path = REPO, files: Mapping[Path, str] | None = None) -> Drift:
    files = render() if files is None else files
    changed = sorted(path for path, text in files.items()
                     if not (root / path).exists() or (root / path).read_text(encoding="utf-8") != text)
    stale = sorted(_generated_on_disk(root) - set(files))
    return Drift(changed, stale)


def export(root: Path = REPO) -> Drift:
    """Write what differs, delete what is no longer produced; returns what it did."""
    files = render()
    found = drift(root, files)
    for path in found.changed:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(files[path], encoding="utf-8")
    for path in found.stale:
        (root / path).unlink()
    return found
