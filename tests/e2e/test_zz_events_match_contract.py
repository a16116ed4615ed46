"""Every event the stack put on any topic matches the published contract (docs/asyncapi.yaml and the JSON
Schemas in docs/events/), every record on a delivery topic decodes as a CloudEvent, and nothing was
dead-lettered.

It runs last in this directory (pytest orders files by name), so it reads what the scenarios and every other
e2e test produced on the session's stack; run alone, it runs the scenarios first.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tests.e2e.network import Network, ce_headers
from tests.e2e.scenarios import ALL_SCENARIOS, People
from tests.support.contract import assert_event_matches_contract

CONTRACT_TOPICS = ("refnet.registry.events", "refnet.intake.events", "refnet.referral.events", "refnet.audit.access")
DELIVERY_PREFIX = "refnet.delivery."
REQUIRED_ATTRIBUTES = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time")


def cloudevent(record: Any) -> tuple[str, dict[str, Any]]:
    """(type, data) of a record in CloudEvents Kafka binary mode; AssertionError naming what is wrong."""
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    headers = ce_headers(record)
    missing = [name for name in REQUIRED_ATTRIBUTES if not headers.get(name)]
    assert not missing, f"{where}: no {', '.join(missing)} header"
    assert headers["ce_specversion"] == "1.0", f"{where}: ce_specversion {headers['ce_specversion']!r}"
    assert headers["ce_source"].startswith("/refnet/"), f"{where}: ce_source {headers['ce_source']!r}"
    assert headers.get("content-type", "").startswith("application/json"), f"{where}: not application/json"
    try:
        data = json.loads(record.value)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{where}: the value is not JSON ({type(exc).__name__})") from None
    assert isinstance(data, dict), f"{where}: the value is not a JSON object"
    return headers["ce_type"], data


async def test_every_event_on_every_topic_matches_the_contract(network: Network) -> None:
    if not await network.topic("refnet.referral.events"):
        for scenario in ALL_SCENARIOS:  # run alone: make some traffic first
            await scenario(network, People.default())

    topics = await network.topic_names()
    delivery = [t for t in topics if t.startswith(DELIVERY_PREFIX) and not t.endswith(".dlq")]
    parties = {f"{DELIVERY_PREFIX}{network.agency(n)}" for n in ("iom", "unhcr", "shelter", "clinic", "legalaid")}
    assert set(CONTRACT_TOPICS) | parties <= set(topics), f"topics missing from the broker's list: {topics}"

    seen: Counter[tuple[str, str]] = Counter()
    problems: list[str] = []
    for topic in topics:
        records = await network.topic(topic)
        if topic.endswith(".dlq"):
            problems += [f"{topic}@{r.offset}: dead-lettered ({ce_headers(r).get('refnet-error', 'no reason')})"
                         for r in records]
            continue
        for record in records:
            try:
                event_type, data = cloudevent(record)
                assert_event_matches_contract(topic, event_type, data)
            except AssertionError as failed:
                problems.append(str(failed))
                continue
            name = DELIVERY_PREFIX + "<agency>" if topic in delivery else topic
            seen[(name, event_type.removeprefix("org.refnet."))] += 1
    assert not problems, f"{len(problems)} records break the contract:\n" + "\n".join(problems[:30])

    # The scenarios reach every topic, and the delivery topics carry each step of a referral's life.
    assert {topic for topic, _ in seen} >= {*CONTRACT_TOPICS, DELIVERY_PREFIX + "<agency>"}, sorted(seen)
    delivered = {event_type for topic, event_type in seen if topic == DELIVERY_PREFIX + "<agency>"}
    assert delivered >= {f"referral.{s}.v1" for s in ("requested", "received", "accepted", "in_progress",
                                                     "completed", "rejected", "cancelled", "overdue")}, delivered
