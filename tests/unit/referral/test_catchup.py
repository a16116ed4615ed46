"""The registry read model is loaded once every partition was applied up to the end it had when we looked."""

from __future__ import annotations

from shared.consumer import caught_up


def test_every_partition_up_to_its_end() -> None:
    assert caught_up({0: 61}, {0: 61})
    assert caught_up({0: 61, 1: 3}, {0: 70, 1: 3})  # beyond the end: events published since
    assert not caught_up({0: 61}, {0: 60})
    assert not caught_up({0: 61, 1: 3}, {0: 61})  # nothing applied from partition 1 yet


def test_empty_partitions_and_topics_need_nothing() -> None:
    assert caught_up({}, {})
    assert caught_up({0: 0}, {})
