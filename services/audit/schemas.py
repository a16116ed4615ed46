"""audit's API models: the cosignature a witness posts, and the shape of every answer.

The use cases build answers as plain JSON objects (an entry exactly as its Merkle leaf hashes it,
``leaf.entry_json``); the routes declare these models as their ``response_model``, so FastAPI checks each answer
against them (``extra="forbid"``: a field a use case adds but a model lacks fails loudly instead of being dropped)
and the OpenAPI document shows them. Times stay the text the use case wrote (the leaf hashes that text).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from shared.text import Line

# Fake values in RefNet's formats (shared/ids.py), and a checkpoint signed by a throwaway key, for the examples.
CASE_ID = "case-6f1d3c9a2b8e4f70a1c2d3e4f5a6b7c8"
AGENCY = "agy_3f9c2b7e1d4a6058"
ORIGIN = "refnet.local/audit"
TREE_SIZE = 1042
ROOT_HASH = "b567c0cbb2e85c295e6ade930e5bb349a4b9bee9489caa7d6b679dd46e82a711"
HASH = "9f91161f43433e49a6de6db680d79f60159f2e4ac9172621a12846428158440b"
CHECKPOINT_BODY = "refnet.local/audit\n1042\ntWfAy7LoXCleat6TDluzSaS5vulInKp9a2ed1G6CpxE=\n"
KEY_ID = "31958450"
SIGNATURE = "EovCwtPFFmYW7s19ppk2nr0SKNZROS3QrxLRO7bXvOMlhSET+cLPVubsWgofyPdETwrrEVcXyfF6YTBXZNxABA=="
COSIGNATURE = ("\u2014 witness.example.org gg/Y8wAAAABp9HKYp5HB/JE6fEPY5w/Tz9zR1eXogyVbB/oiD4vnx+9O+WuhB/fNbMfdhZSKu1ML"
               "I7sVk0K6DIp4567GV+tHr4jTBA==")
NOTE = (CHECKPOINT_BODY + "\n\u2014 refnet.local/audit MZWEUBKLwsLTxRZmFu7NfaaZNp69EijWUTkt0K8S0Tu217zjJYUhE/nCz1bm"
        "7FoKH8j3RE8K6xFXF8nxemEwV2TcQAQ=\n" + COSIGNATURE + "\n")
MOMENT = "2026-05-01T09:30:00.123456Z"

#: A moment as audit writes it (``leaf.format_time``: RFC 3339 UTC, microseconds), kept as that text.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class CosignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cosignature: Line = Field(max_length=512, description="the C2SP tlog-cosignature line, '\u2014 <name> <base64>'",
                              examples=[COSIGNATURE])


class Answer(BaseModel):
    """An answer's model: every field the use case writes, no other (a new one fails the tests, not silently)."""

    model_config = ConfigDict(extra="forbid")


# The fields of an entry, described once (entries, a case's consents and its access records share them).
Index = Annotated[int, Field(description="The entry's position in the log (0 the first).", examples=[1041])]
RecordedAt = Annotated[Timestamp, Field(description="When the log appended the entry (RFC 3339, UTC, microseconds).",
                                        examples=[MOMENT])]
OccurredAt = Annotated[Timestamp, Field(description="When the recorded act happened, as the service that did "
                                        "it said (RFC 3339, UTC, microseconds).",
                                        examples=["2026-05-01T09:29:59.870012Z"])]
Action = Annotated[str, Field(description="What was done: `case.read`, `consent.grant`, `referral.accepted`, ...",
                              examples=["case.read"])]
Outcome = Annotated[str, Field(description="`success`, `denied` or `error`.", examples=["success"])]
Agency = Annotated[str | None, Field(description="The agency that acted.", examples=[AGENCY])]
ClientId = Annotated[str | None, Field(description="The API client that acted: the agency's system client, or the "
                                       "first-party client (the console) a person signed in through.",
                                       examples=["cli_5e2a9c7d1b3f4068"])]
ActingUser = Annotated[str | None, Field(description="The person acting inside the agency (an identifier, never a "
                                         "name): the subject of their own access token, or who the agency's system "
                                         "named in `X-Acting-User` -- `details.attested_by` says which.",
                                         examples=["user-0042"])]
Purpose = Annotated[str | None, Field(description="Why, as the acting agency declared it (`X-Purpose`).",
                                      examples=["case_management"])]
ResourceType = Annotated[str | None, Field(description="What kind of thing the act was about (FHIR AuditEvent "
                                           "entity): `Case`, `Consent`, `Referral`, `Agency`, ...", examples=["Case"])]
ResourceId = Annotated[str | None, Field(description="The id of that thing.", examples=[CASE_ID])]
EntryCaseId = Annotated[str | None, Field(description="The case the act concerned (pseudonymous).",
                                          examples=[CASE_ID])]
SourceService = Annotated[str, Field(description="The RefNet service that recorded the act.", examples=["intake"])]
EventId = Annotated[str, Field(description="The id of the event the entry was made from (unique per service).",
                               examples=["7c3e1a9b5d2f4e6a8b0c1d3e5f7a9b2c"])]
Details = Annotated[dict[str, Any], Field(
    description="The event's other fields: ids, enumerations, small integers, booleans, short lists and flat "
    "records of those, never free text. `attested_by` says on whose authentication `acting_user` is named: "
    "`token` (the person's own verified access token) or `system` (asserted by the agency's system client); "
    "absent when nobody is named, and in entries logged before it was recorded.",
    examples=[{"data_categories": ["identity", "protection_needs"], "attested_by": "system"}])]


class Entry(Answer):
    """One log entry, exactly as its Merkle leaf hashes it (RFC 8785 canonical JSON of this object)."""

    index: Index
    recorded_at: RecordedAt
    occurred_at: OccurredAt
    action: Action
    outcome: Outcome
    agency: Agency
    client_id: ClientId
    acting_user: ActingUser
    purpose: Purpose
    resource_type: ResourceType
    resource_id: ResourceId
    case_id: EntryCaseId
    source_service: SourceService
    event_id: EventId
    details: Details


ENTRY_EXAMPLE = {
    "index": 1041, "recorded_at": MOMENT, "occurred_at": "2026-05-01T09:29:59.870012Z", "action": "case.read",
    "outcome": "success", "agency": AGENCY, "client_id": "cli_5e2a9c7d1b3f4068", "acting_user": "user-0042",
    "purpose": "case_management", "resource_type": "Case", "resource_id": CASE_ID, "case_id": CASE_ID,
    "source_service": "intake", "event_id": "7c3e1a9b5d2f4e6a8b0c1d3e5f7a9b2c",
    "details": {"data_categories": ["identity", "protection_needs"]},
}


class EntryPage(Answer):
    items: list[Entry] = Field(description="One page of entries, in log order.", examples=[[ENTRY_EXAMPLE]])
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page (the index of this page's last "
                                    "entry); null: the last page.", examples=["1041"])


class ConsentBasis(Answer):
    """The consent (or override) a read relied on."""

    consent_id: str | None = Field(description="The consent in force (null: none, or an override).",
                                   examples=["consent-0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a59"])
    # As the services recorded it: audit keeps what it was told (normally an integer).
    consent_version: Any = Field(description="Its version, as recorded (normally an integer; null when no consent).",
                                 examples=[2])
    basis: str = Field(description="How it is known: `recorded` (the reading service named it), `log` (the log's "
                       "consent history at the time), `override` (a risk-to-life override), `none` (no consent or "
                       "override was in force).", examples=["recorded"])


class AccessRecord(Answer):
    """One read (or attempted read) of the case."""

    index: Index
    occurred_at: OccurredAt
    recorded_at: RecordedAt
    action: Action
    outcome: Outcome
    agency: Agency
    client_id: ClientId
    acting_user: ActingUser
    attested_by: Literal["token", "system"] | None = Field(
        description="On whose authentication `acting_user` is named: `token` (the person's own access token), "
                    "`system` (asserted by the agency's system); null when nobody is named, or not recorded.",
        examples=["token"])
    purpose: Purpose
    # As the reading service recorded it (normally a list of data categories).
    data_categories: Any = Field(description="The categories of the case's data read, as the reading service "
                                 "recorded them (null: not recorded).", examples=[["identity", "protection_needs"]])
    consent: ConsentBasis = Field(description="The consent the read relied on.", examples=[{
        "consent_id": "consent-0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a59", "consent_version": 2, "basis": "recorded"}])


class CaseAccess(Answer):
    case_id: str = Field(description="The case (pseudonymous).", examples=[CASE_ID])
    items: list[AccessRecord] = Field(description="Every read of the case, in log order.", examples=[[]])
    next_cursor: None = Field(description="Always null: a case's history is one page.", examples=[None])


class ConsentEntry(Answer):
    """A consent entry of a case: an entry without its case and source (the list says which case)."""

    index: Index
    recorded_at: RecordedAt
    occurred_at: OccurredAt
    action: Action
    outcome: Outcome
    agency: Agency
    client_id: ClientId
    acting_user: ActingUser
    purpose: Purpose
    resource_type: ResourceType
    resource_id: ResourceId
    event_id: EventId
    details: Details


class CaseConsents(Answer):
    case_id: str = Field(description="The case (pseudonymous).", examples=[CASE_ID])
    items: list[ConsentEntry] = Field(description="The case's consent grants, withdrawals and overrides, in log "
                                      "order.", examples=[[]])
    next_cursor: None = Field(description="Always null: a case's history is one page.", examples=[None])


class Checkpoint(Answer):
    """A signed checkpoint of the log (C2SP tlog-checkpoint), with the witnesses' cosignatures."""

    origin: str = Field(description="The log's name, the first line of every checkpoint.", examples=[ORIGIN])
    tree_size: int = Field(description="How many entries the checkpoint covers.", examples=[TREE_SIZE])
    root_hash: str = Field(description="The RFC 9162 Merkle tree root at that size (hex).", examples=[ROOT_HASH])
    timestamp: Timestamp = Field(description="When it was signed (RFC 3339, UTC, microseconds).", examples=[MOMENT])
    body: str = Field(description="The signed text: origin, tree size and base64 root, one per line.",
                      examples=[CHECKPOINT_BODY])
    key_id: str = Field(description="The C2SP key id (hex) of the key that signed it.", examples=[KEY_ID])
    signature: str = Field(description="The Ed25519 signature of `body` (base64).", examples=[SIGNATURE])
    note: str = Field(description="The same checkpoint as a C2SP signed note: the body, a blank line, the log's "
                      "signature line, then the witnesses' cosignature lines.", examples=[NOTE])
    cosignatures: list[str] = Field(description="The witnesses' cosignature lines (C2SP tlog-cosignature).",
                                    examples=[[COSIGNATURE]])


class Cosignature(Answer):
    tree_size: int = Field(description="The checkpoint cosigned.", examples=[TREE_SIZE])
    witness: str = Field(description="The witness's name, as its verifier key names it.",
                         examples=["witness.example.org"])
    cosigned_at: int = Field(description="When the witness cosigned (Unix seconds, as the cosignature says).",
                             examples=[1777627800])


class InclusionProof(Answer):
    index: int = Field(description="The entry proved.", examples=[1041])
    tree_size: int = Field(description="The tree size the proof is for.", examples=[TREE_SIZE])
    leaf_hash: str = Field(description="The entry's leaf hash (hex): SHA-256 of 0x00 and the entry's RFC 8785 JSON.",
                           examples=[HASH])
    root_hash: str = Field(description="The tree root at that size (hex).", examples=[ROOT_HASH])
    path: list[str] = Field(description="The RFC 9162 inclusion proof: sibling hashes (hex), leaf to root.",
                            examples=[[HASH]])


class ConsistencyProof(Answer):
    first: int = Field(description="The earlier tree size.", examples=[1000])
    second: int = Field(description="The later tree size.", examples=[TREE_SIZE])
    first_root_hash: str = Field(description="The tree root at `first` (hex).", examples=[HASH])
    second_root_hash: str = Field(description="The tree root at `second` (hex).", examples=[ROOT_HASH])
    path: list[str] = Field(description="The RFC 9162 consistency proof: hashes (hex).", examples=[[HASH]])


class Verification(Answer):
    """What recomputing the tree from the stored entries found."""

    ok: bool = Field(description="Whether everything checked out.", examples=[True])
    tree_size: int = Field(description="The entries recomputed up to (the log's size, or where a hole starts).",
                           examples=[TREE_SIZE])
    first_bad_index: int | None = Field(description="The first entry whose recomputed leaf differs from the stored "
                                        "one, or where the index sequence has a hole (null: none).", examples=[None])
    root_hash: str = Field(description="The recomputed root (hex).", examples=[ROOT_HASH])
    stored_root_matches: bool = Field(description="Whether the stored Merkle nodes give the same root.",
                                      examples=[True])
    checkpoints_checked: int = Field(description="How many signed checkpoints were compared.", examples=[12])
    first_bad_checkpoint: int | None = Field(description="The tree size of the first checkpoint that does not match "
                                             "or does not verify (null: none).", examples=[None])
    missing_checkpoint: int | None = Field(description="The tree size of a checkpoint the signer remembers but the "
                                           "database no longer holds (null: none).", examples=[None])
    full: bool = Field(description="Whether it recomputed from the first entry.", examples=[False])
    from_index: int = Field(description="The entry it started from (the last verified checkpoint's size, or 0).",
                            examples=[1000])


class PublicKeys(Answer):
    """What a verifier needs to check checkpoints: the log's keys and its witnesses."""

    key_id: str = Field(description="The C2SP key id (hex) of the current signing key.", examples=[KEY_ID])
    algorithm: str = Field(description="The signature algorithm.", examples=["Ed25519"])
    origin: str = Field(description="The log's name.", examples=[ORIGIN])
    public_key: str = Field(description="The current signing key, raw (base64).",
                            examples=["A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="])
    vkey: str = Field(description="The current key as a C2SP signed-note verifier key.",
                      examples=["refnet.local/audit+31958450+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"])
    previous_keys: list[str] = Field(description="Earlier signing keys still trusted for older checkpoints (verifier "
                                     "keys).", examples=[[]])
    witnesses: list[str] = Field(description="The witnesses' verifier keys (cosignature keys).",
                                 examples=[["witness.example.org+820fd8f3+BHm1Vi6P5lT5QHixEuipi6eQH4U65pW+1+DjkQutBJZk"]])
