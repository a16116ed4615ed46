"""Hostile input (issue #8, part 2): whatever a client or a producer sends, the answer is a documented 4xx, never a
5xx, and nothing crashes.

- schemathesis fuzzes every operation of the four OpenAPI documents, with a token that holds the operation's scopes
  and with none (tests/reliability/fuzzing.py);
- a body over 1 MiB is a 413 on every operation that takes a body, declared or streamed;
- JSON nested 100,000 deep, arrays of half a million items, numbers of 600,000 digits and the like are refused
  with a small problem document, and every service process is still the one that started;
- malformed, oversized and wrongly typed events on every topic a service consumes end in ``<topic>.dlq`` with
  ``refnet-error``, once per consumer, and a valid event after them is still applied.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.envelope import ERROR_HEADER, Event, encode
from shared.errors import MAX_LISTED_ERRORS, PROBLEM_MEDIA_TYPE
from shared.kafka import dlq_topic
from shared.settings import SERVICE_NAMES
from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS, REFERRAL_EVENTS, REGISTRY_EVENTS
from tests.e2e.network import Network, eventually
from tests.reliability.flows import consent_id, refer, register_case
from tests.reliability.fuzzing import edge_cases, edge_failure, fuzz
from tests.reliability.report import FULL, Report, scale
from tests.reliability.stack import Operation, dead_services, openapi_document, operations, person_token, service_pids

REPO = Path(__file__).resolve().parents[2]
ONE_MIB = 1024 * 1024
# The demo agencies that between them hold every scope, the broadest first. Not iom, unhcr or legalaid: the
# fuzzer fills its caller's quotas (webhook subscriptions), and the isolation suite makes its resources as those.
CALLERS = ("clinic", "admin", "oversight", "referral-service")


def token_for(net: Network) -> Any:
    def token(scopes: tuple[str, ...]) -> str | None:
        for name in CALLERS:
            if set(scopes) <= set(net.credentials(name)["scopes"]):
                return net.token(name)
        # A scope only people hold (issue 20): a person of the broadest caller, in the role that gives it.
        return person_token(net, CALLERS[0], scopes)

    return token


# --- the documents ------------------------------------------------------------------------------------------


def test_every_service_serves_the_openapi_document_published_in_docs(reliability_network: Network) -> None:
    """Integrators read docs/openapi/<service>.json; it must be what the running service answers by."""
    for service in SERVICE_NAMES:
        published = REPO / "docs" / "openapi" / f"{service}.json"
        assert published.exists(), f"{published} is missing: run `refnet contract export`"
        assert openapi_document(reliability_network, service) == json.loads(published.read_text()), (
            f"{published} differs from what {service} serves: run `refnet contract export`")


# --- fuzzing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_fuzzed_requests_get_no_5xx_and_only_documented_answers(
        reliability_network: Network, report: Report, service: str) -> None:
    net = reliability_network
    pids = service_pids(net)
    result = fuzz(net.url(service), openapi_document(net, service), token_for(net),
                  examples_with_token=scale(60, 4), examples_without_token=scale(10, 1), derandomize=not FULL)
    crashed = dead_services(pids)
    failures = len(result.failures) + len(crashed) + len(result.no_token_holder)
    report.add(
        f"hostile input: schemathesis, {service}",
        injected=f"requests generated from {service}'s OpenAPI document, valid and invalid, with a token holding "
                 "the operation's scopes and with none",
        checked="no 5xx; status, content type, body schema and headers as documented; no process crash",
        figures={"operations": result.operations, "requests": result.requests, "5xx": result.server_errors,
                 "statuses": ", ".join(f"{s} ({n})" for s, n in sorted(result.statuses.items())),
                 "runs without possible input": result.unsatisfiable, "seconds": round(result.seconds, 1)},
        failures=failures)
    assert not crashed, f"service processes gone: {crashed}"
    assert not result.no_token_holder, f"no demo agency nor person role holds the scopes of {result.no_token_holder}"
    assert not result.failures, "\n\n".join(f"{k}\n{v}" for k, v in result.failures.items())
    assert result.requests >= result.operations


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_edge_values_in_every_parameter_get_no_5xx(reliability_network: Network, report: Report, service: str) -> None:
    """Integer and time edges, NUL and control characters, very long values: in each query and path parameter."""
    net = reliability_network
    document = openapi_document(net, service)
    failures: list[str] = []
    cases = edge_cases(document)
    with httpx.Client(base_url=net.url(service), timeout=30) as http:
        for case in cases:
            spec = document["paths"][case.operation.split(" ", 1)[1]][case.method.lower()]
            scopes = tuple(sorted({s for r in spec.get("security") or [] for ss in r.values() for s in ss}))
            token = token_for(net)(scopes) if spec.get("security") else None
            headers = {"X-Purpose": "case_management", **({"Authorization": f"Bearer {token}"} if token else {})}
            try:
                answer = http.request(case.method, case.path, params=case.params, headers=headers)
            except httpx.TransportError as exc:  # the connection dropped: a crash, or a limit without an answer
                failures.append(f"{edge_failure(case, 599, '')} (no answer: {type(exc).__name__})")
                continue
            if (failure := edge_failure(case, answer.status_code, answer.headers.get("content-type", ""))):
                failures.append(failure)
    report.add(f"hostile input: edge values, {service}",
               injected="integer and time edges, NUL and control characters, very long ids, in each parameter",
               checked="no 5xx; every 4xx a problem document", figures={"requests": len(cases)},
               failures=len(failures))
    assert not failures, "\n".join(failures)


# --- oversized and pathological bodies ----------------------------------------------------------------------


def _body_operations(net: Network) -> list[Operation]:
    return [op for op in operations(net) if op.body_media_type is not None]


def _url(net: Network, op: Operation) -> str:
    return op.url(net, **dict.fromkeys(op.path_params, "x1"))


def _headers(net: Network, op: Operation) -> dict[str, str]:
    headers = {"Content-Type": op.body_media_type or "application/json", "X-Purpose": "case_management"}
    if op.scopes is not None:
        token = token_for(net)(op.scopes)
        if token:
            headers["Authorization"] = f"Bearer {token}"
    return headers


def _is_problem(response: httpx.Response, status: int | None = None) -> bool:
    if status is not None and response.status_code != status:
        return False
    return response.headers.get("content-type", "").startswith(PROBLEM_MEDIA_TYPE)


def test_bodies_over_one_mib_are_refused_with_413_on_every_operation_that_takes_one(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    ops = _body_operations(net)
    oversized = b"{" + b'"pad": "' + b"a" * ONE_MIB + b'"}'
    failures: list[str] = []
    tried = 0
    with httpx.Client(timeout=60) as http:
        for op in ops:
            url, headers = _url(net, op), _headers(net, op)
            declared = http.request(op.method, url, content=oversized, headers=headers)

            def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading the stream
                for start in range(0, len(oversized), 64 * 1024):
                    yield oversized[start:start + 64 * 1024]

            streamed = http.request(op.method, url, content=chunks(), headers=headers)
            # At the limit, not over it: refused for what it says, not for its size.
            at_limit = http.request(op.method, url, headers=headers,
                                    content=b'{"pad": "' + b"a" * (ONE_MIB - 11) + b'"}')
            tried += 3
            for what, response in (("declared length", declared), ("chunked", streamed)):
                if not _is_problem(response, 413) or response.json()["type"] != "urn:refnet:problem:payload-too-large":
                    failures.append(f"{op.label} ({what}): {response.status_code} {response.text[:200]}")
            if at_limit.status_code in (413,) or at_limit.status_code >= 500:
                failures.append(f"{op.label} (exactly 1 MiB): {at_limit.status_code} {at_limit.text[:200]}")
    report.add("hostile input: bodies over 1 MiB",
               injected="1 MiB + 10 bytes, with Content-Length and chunked; exactly 1 MiB",
               checked="413 payload-too-large problem over the limit, no 413 or 5xx at it",
               figures={"operations": len(ops), "requests": tried}, failures=len(failures))
    assert ops, "no operation takes a body?"
    assert not failures, "\n".join(failures)


def _array_fields(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Top-level fields of a body schema that take an array (their items are validated one by one)."""
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    fields = []
    for name, prop in schema.get("properties", {}).items():
        variants = prop.get("anyOf", [prop])
        if any(v.get("type") == "array" for v in variants):
            fields.append(name)
    return fields


def pathological_bodies(document: dict[str, Any], op_spec: dict[str, Any]) -> dict[str, bytes]:
    depth = 100_000
    bodies = {
        "arrays nested 100,000 deep": b"[" * depth + b"]" * depth,
        "objects nested 50,000 deep": b'{"a":' * (depth // 2) + b"1" + b"}" * (depth // 2),
        "an array of 500,000 numbers": b"[" + b"0," * 499_999 + b"0]",
        "a number of 600,000 digits": b'{"limit": ' + b"9" * 600_000 + b"}",
        "a string of 1,000,000 characters": b'{"reason": "' + b"\\u00e9" * 170_000 + b'"}',
        "NaN and Infinity": b'{"limit": NaN, "total": Infinity, "available": -Infinity}',
        "invalid UTF-8": b'{"reason": "\xff\xfe\xfd"}',
        "100,000 repeated keys": b"{" + b'"k": 1,' * 100_000 + b'"k": 2}',
    }
    schema = op_spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    fields = _array_fields(document, schema)
    if fields:  # each item an error of its own, unless the answer keeps to a few
        items = (ONE_MIB - 4096) // (3 * len(fields))
        body = json.dumps({name: [{}] * items for name in fields}, separators=(",", ":")).encode()
        assert len(body) < ONE_MIB
        bodies[f"{len(fields)} array field(s) of {items:,} wrong items"] = body
    return bodies


def _unbounded_arrays(document: dict[str, Any], schema: dict[str, Any], where: str, seen: frozenset[str]) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if name in seen:
            return []
        return _unbounded_arrays(document, document["components"]["schemas"][name], where, seen | {name})
    found = [where] if schema.get("type") == "array" and "maxItems" not in schema else []
    for variant in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        found += _unbounded_arrays(document, variant, where, seen)
    for name, prop in schema.get("properties", {}).items():
        found += _unbounded_arrays(document, prop, f"{where}.{name}", seen)
    if isinstance(schema.get("items"), dict):
        found += _unbounded_arrays(document, schema["items"], f"{where}[]", seen)
    if isinstance(schema.get("additionalProperties"), dict):
        found += _unbounded_arrays(document, schema["additionalProperties"], f"{where}{{}}", seen)
    return found


def test_every_array_a_request_body_may_carry_is_bounded(reliability_network: Network) -> None:
    """Validating a 1 MiB body of 350,000 wrong list items took a service 10 s, its event loop held all along;
    with ``maxItems`` (pydantic's max_length) the list is refused at its length. So every array is bounded."""
    unbounded: list[str] = []
    for service in SERVICE_NAMES:
        document = openapi_document(reliability_network, service)
        for path, item in document["paths"].items():
            for method, operation in item.items():
                for content in operation.get("requestBody", {}).get("content", {}).values():
                    unbounded += _unbounded_arrays(document, content.get("schema", {}),
                                                   f"{service} {method.upper()} {path} body", frozenset())
    assert not unbounded, unbounded


def test_deep_and_huge_json_is_refused_with_a_small_4xx_and_nothing_crashes(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    pids = service_pids(net)
    documents = {service: openapi_document(net, service) for service in SERVICE_NAMES}
    ops = [op for op in _body_operations(net) if op.body_media_type == "application/json"]
    if not FULL:  # one operation per service in `make test`; every one in `make reliability`
        ops = [next(op for op in ops if op.service == service) for service in {op.service for op in ops}]
    failures: list[str] = []
    tried = 0
    slowest = 0.0
    with httpx.Client(timeout=60) as http:
        for op in ops:
            spec = documents[op.service]["paths"][op.path][op.method]
            for what, body in pathological_bodies(documents[op.service], spec).items():
                response = http.request(op.method, _url(net, op), content=body, headers=_headers(net, op))
                tried += 1
                slowest = max(slowest, response.elapsed.total_seconds())
                if not (400 <= response.status_code < 500 and _is_problem(response)):
                    failures.append(f"{op.label}, {what}: {response.status_code} {response.text[:200]}")
                elif len(response.content) > 64 * 1024:
                    failures.append(f"{op.label}, {what}: a {len(response.content)}-byte answer")
                elif len(response.json().get("errors", [])) > MAX_LISTED_ERRORS:
                    failures.append(f"{op.label}, {what}: {len(response.json()['errors'])} errors listed")
                elif response.elapsed.total_seconds() > 5:  # the service answers nobody else meanwhile
                    failures.append(f"{op.label}, {what}: {response.elapsed.total_seconds():.1f} s to refuse")
    crashed = dead_services(pids)
    for service in SERVICE_NAMES:
        if httpx.get(net.url(service) + "/healthz", timeout=10).status_code != 200:
            failures.append(f"{service} is not healthy afterwards")
    report.add("hostile input: pathological JSON",
               injected="nesting 100,000 deep, 500,000-item arrays, 600,000-digit numbers, 1 M-character strings, "
                        "NaN, invalid UTF-8, repeated keys, array fields of wrong items",
               checked="a 4xx problem under 64 KiB listing at most 20 errors, within 5 s; every process alive and "
                       "healthy",
               figures={"operations": len(ops), "requests": tried, "slowest answer (s)": round(slowest, 2)},
               failures=len(failures) + len(crashed))
    assert not crashed, f"service processes gone: {crashed}"
    assert not failures, "\n".join(failures)


# --- poison events ------------------------------------------------------------------------------------------

#: Who consumes what (services/*/consumers.py and audit's ingest): the consumer groups, by topic. The test below
#: fails if a consumer group appears on the broker that this table does not name, so a new consumer gets tested.
CONSUMERS: dict[str, tuple[str, ...]] = {
    REGISTRY_EVENTS: ("intake-agencies", "referral-registry", "refnet-audit"),
    INTAKE_EVENTS: ("referral-intake", "refnet-audit"),
    REFERRAL_EVENTS: ("intake-referrals", "refnet-audit"),
    AUDIT_ACCESS: ("refnet-audit",),
}
#: A type each topic's consumers all handle, and a payload of it with fields of the wrong JSON type (objects
#: inside objects where ids belong: no consumer may store that, audit included).
WRONG_TYPES: dict[str, tuple[str, dict[str, Any]]] = {
    REGISTRY_EVENTS: ("agency.suspended.v1", {"agency_id": {"id": {"nested": 1}}, "status": 7, "scopes": "all"}),
    INTAKE_EVENTS: ("consent.withdrawn.v1", {"case_id": ["case-x"], "consent_id": 5, "reason": {"a": {"b": 1}}}),
    REFERRAL_EVENTS: ("referral.requested.v1", {"referral_id": {"x": {"y": 1}}, "case_id": 12, "to_agency": [],
                                                 "shared_categories": "all"}),
    AUDIT_ACCESS: ("access.recorded.v1", {"action": ["case.read"], "outcome": 1, "case_id": {"id": {"n": 2}}}),
}
Message = tuple[bytes, list[tuple[str, bytes]]]  # value, headers


def poison_messages(topic: str) -> dict[str, Message]:
    """Every kind of poison for ``topic``, by kind."""
    type_, wrong = WRONG_TYPES[topic]

    def cloudevent(data: dict[str, Any]) -> Message:
        _, value, headers = encode(Event(id=str(uuid.uuid4()), source="/refnet/hostile", type=type_, subject=None,
                                         partition_key="poison", time=datetime.now(UTC), data=data))
        return value, headers

    value, headers = cloudevent({"x": 1})
    return {
        "not-cloudevents": (b'{"hello": "world"}', [("content-type", b"application/json")]),
        "bad-json": (b'{"case_id": "c", "oops', headers),
        "not-an-object": (b'["a", "list"]', headers),
        "missing-ce-id": (value, [(k, v) for k, v in headers if k != "ce_id"]),
        "wrong-types": cloudevent(wrong),
        "oversized": cloudevent({"agency_id": "a" * 500_000, "case_id": "c" * 300_000}),
    }


async def _end_offsets(net: Network, topics: list[str]) -> dict[TopicPartition, int]:
    reader = AIOKafkaConsumer(bootstrap_servers=net.bootstrap, group_id=None)
    await reader.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t) or {0})]
        return dict(await reader.end_offsets(partitions))
    finally:
        await reader.stop()


async def _committed(net: Network, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """A consumer group's committed offsets, read as a member would (no join: nothing is subscribed)."""
    reader = AIOKafkaConsumer(bootstrap_servers=net.bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        return {tp: (await reader.committed(tp)) or 0 for tp in partitions}
    finally:
        await reader.stop()


async def _caught_up(net: Network, group: str, partitions: list[TopicPartition],
                     ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    return await eventually(lambda: _committed(net, group, partitions),
                            lambda committed: all(committed[tp] >= ends[tp] for tp in partitions))


async def _dead_letters(net: Network, dlq: str, keys: set[str], expected: int) -> list[Any]:
    """The records of ``dlq`` with one of ``keys``, read until ``expected`` of them are there (or 30 s)."""

    def ours(records: list[Any]) -> list[Any]:
        return [r for r in records if r.key and r.key.decode(errors="replace") in keys]

    return ours(await net.topic(dlq, until=lambda records: len(ours(records)) >= expected, seconds=30))


async def test_poison_events_on_every_consumed_topic_are_dead_lettered_and_consumers_go_on(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    run = uuid.uuid4().hex[:8]
    sent: dict[str, str] = {}  # Kafka key -> topic
    producer = AIOKafkaProducer(bootstrap_servers=net.bootstrap, acks="all", max_request_size=2 * ONE_MIB)
    await producer.start()
    try:
        for topic in CONSUMERS:
            for kind, (value, headers) in poison_messages(topic).items():
                key = f"poison-{run}-{topic}-{kind}"
                await producer.send_and_wait(topic, value=value, key=key.encode(), headers=headers)
                sent[key] = topic
    finally:
        await producer.stop()
    poisoned_ends = await _end_offsets(net, list(CONSUMERS))

    # Valid events after the poison, each with an effect someone can see through the public APIs.
    async with httpx.AsyncClient(timeout=30) as http:
        case = await register_case(http, net, "iom", "unhcr")  # intake events (and access records)
        referral = await refer(http, net, "iom", case["id"], "unhcr")  # referral events
        # intake applied the referral event: the recipient may now read what the referral shares
        read = await eventually(
            lambda: http.get(net.url("intake") + f"/cases/{case['id']}", headers=net.headers("unhcr", "referral")),
            lambda r: r.status_code == 200)
        assert read.status_code == 200, f"intake-referrals stopped after the poison: {read.text}"
        consent = await consent_id(http, net, "iom", case["id"])
        withdrawn = await http.post(net.url("intake") + f"/cases/{case['id']}/consents/{consent}/withdraw",
                                    headers=net.headers("iom"), json={"reason": "reliability"})
        assert withdrawn.status_code == 201, withdrawn.text
        # referral applied the intake event: the referral is cancelled for the withdrawn consent
        cancelled = await eventually(
            lambda: http.get(net.url("referral") + f"/referrals/{referral['id']}", headers=net.headers("iom")),
            lambda r: r.json().get("status") == "cancelled")
        assert cancelled.json()["status"] == "cancelled", f"referral-intake stopped after the poison: {cancelled.text}"
        service = await http.post(net.url("registry") + "/services", headers=net.headers("iom"), json={
            "taxonomy": "shelter", "names": {"en": f"Reliability shelter {run}"}, "countries": ["IT"],
            "languages": ["en"], "accepts_children": False, "capacity": {"available": 3, "total": 5,
                                                                         "status": "accepting"}})
        assert service.status_code == 201, service.text
        # referral applied the registry event: the new service is suggested (to others than its own agency)
        suggested = await eventually(
            lambda: http.get(net.url("referral") + "/referrals/suggestions", headers=net.headers("unhcr"),
                             params={"service_type": "shelter", "limit": 100}),
            lambda r: service.json()["id"] in {i["service_id"] for i in r.json()["items"]})
        assert service.json()["id"] in {i["service_id"] for i in suggested.json()["items"]}, (
            "referral-registry stopped after the poison")
        # audit applied events of all four topics: the case's creation, the referral, the recipient's read, the
        # new service
        audited = await eventually(
            lambda: http.get(net.url("audit") + "/audit/entries", headers=net.headers("oversight", "audit"),
                             params={"limit": 500, "since": case["created_at"]}),
            lambda r: {"case.create", "referral.requested", "case.read", "service.published"}
            <= {e["action"] for e in r.json()["items"]})
        assert {"case.create", "referral.requested", "case.read", "service.published"} <= {
            e["action"] for e in audited.json()["items"]}, "refnet-audit stopped after the poison"

    # Every consumer group has committed past the poison, and the table above knows every group there is.
    admin = AIOKafkaAdminClient(bootstrap_servers=net.bootstrap)
    await admin.start()
    try:
        groups_on_broker = {group for group, _ in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    unknown = groups_on_broker - {g for gs in CONSUMERS.values() for g in gs}
    assert not unknown, f"consumer groups this test does not poison yet: {unknown} (add them to CONSUMERS)"
    lagging: list[str] = []
    for topic, groups in CONSUMERS.items():
        partitions = [tp for tp in poisoned_ends if tp.topic == topic]
        for group in groups:
            committed = await _caught_up(net, group, partitions, poisoned_ends)
            lagging += [f"{group} on {tp.topic}: {committed[tp]} < {poisoned_ends[tp]}" for tp in partitions
                        if committed[tp] < poisoned_ends[tp]]

    # Each poison message is in its topic's DLQ once per consumer of the topic, with the reason.
    expected = sum(len(CONSUMERS[topic]) for topic in sent.values())
    dead: list[Any] = []
    for topic in CONSUMERS:
        keys = {key for key, t in sent.items() if t == topic}
        dead += await _dead_letters(net, dlq_topic(topic), keys, len(keys) * len(CONSUMERS[topic]))
    found: dict[str, list[str]] = {key: [] for key in sent}
    missing_reason: list[str] = []
    for record in dead:
        attributes = {k: bytes(v).decode(errors="replace") for k, v in record.headers}
        key = record.key.decode()
        assert record.topic == dlq_topic(sent[key])
        found[key].append(attributes.get("refnet-consumer", "?"))
        if not attributes.get(ERROR_HEADER):
            missing_reason.append(key)
    wrong = {key: sorted(groups) for key, groups in found.items()
             if sorted(groups) != sorted(CONSUMERS[sent[key]])}
    report.add("hostile input: poison events",
               injected="not CloudEvents, bad JSON, a non-object payload, no ce_id, wrong field types, 800 KB events "
                        f"on each of the {len(CONSUMERS)} consumed topics",
               checked="each in <topic>.dlq once per consumer with refnet-error; every group commits past them; "
                       "a valid event after them is applied by every consumer",
               figures={"poison messages": len(sent), "consumer groups": len({g for gs in CONSUMERS.values()
                                                                              for g in gs}),
                        "dead-lettered copies": len(dead), "expected copies": expected},
               failures=len(wrong) + len(missing_reason) + len(lagging))
    assert not wrong, f"dead-lettered by the wrong consumers (key: consumers): {wrong}"
    assert not missing_reason, f"dead-lettered without {ERROR_HEADER}: {missing_reason}"
    assert not lagging, f"consumer groups stuck before the end of the poison: {lagging}"
    assert len(dead) == expected
