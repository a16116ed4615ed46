"""The signing-key lifecycle's rules (domain): next -> current -> previous -> retired, which key signs, what the
JWKS publishes, and when a private part is destroyed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.registry import domain
from services.registry.domain import SigningKeyState

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _statuses(keys: list[SigningKeyState]) -> dict[str, str]:
    return {k.kid: k.status for k in keys}


def test_a_key_file_seeds_the_signing_key_its_previous_one_and_retires_the_rest() -> None:
    keys = domain.seeded_keys(["a", "b", "c"], NOW)
    assert _statuses(keys) == {"a": "current", "b": "previous", "c": "retired"}
    assert [k.retired_at for k in keys] == [None, NOW, NOW]


def test_an_immediate_rotation_signs_with_the_new_key_and_keeps_the_old_one_published() -> None:
    keys = [SigningKeyState("old", "previous", retired_at=NOW - timedelta(days=1)), SigningKeyState("cur", "current")]
    after = domain.rotated(keys, "new", NOW)
    assert _statuses(after) == {"old": "retired", "cur": "previous", "new": "current"}
    assert domain.signer(after) == "new"
    # A key that stopped signing keeps the time it first stopped; one that signs has none.
    retired_at = {k.kid: k.retired_at for k in after}
    assert retired_at == {"old": NOW - timedelta(days=1), "cur": NOW, "new": None}
    assert [k.kid for k in domain.published(after)] == ["new", "cur"]


def test_a_rotation_ahead_publishes_the_new_key_and_signs_with_it_only_once_due() -> None:
    keys = [SigningKeyState("cur", "current")]
    after = domain.rotated(keys, "new", NOW, activate_in_seconds=60)
    assert _statuses(after) == {"cur": "current", "new": "next"}
    assert domain.signer(after) == "cur"
    assert [k.kid for k in domain.published(after)] == ["cur", "new"]
    assert domain.due_to_sign(after, NOW + timedelta(seconds=59)) is None
    assert domain.due_to_sign(after, NOW + timedelta(seconds=60)) == "new"
    promoted = domain.promoted(after, "new", NOW + timedelta(seconds=60))
    assert _statuses(promoted) == {"cur": "previous", "new": "current"}


def test_a_second_rotation_ahead_replaces_the_key_not_yet_signing() -> None:
    keys = domain.rotated([SigningKeyState("cur", "current")], "early", NOW, activate_in_seconds=60)
    after = domain.rotated(keys, "late", NOW, activate_in_seconds=60)
    assert _statuses(after) == {"cur": "current", "early": "retired", "late": "next"}
    assert "early" not in [k.kid for k in domain.published(after)]


def test_dropping_a_compromised_key_retires_it_at_once() -> None:
    keys = [SigningKeyState("old", "previous", retired_at=NOW), SigningKeyState("bad", "current")]
    after = domain.rotated(keys, "new", NOW, keep_previous=False)
    assert _statuses(after) == {"old": "retired", "bad": "retired", "new": "current"}
    assert [k.kid for k in domain.published(after)] == ["new"]


def test_retiring_the_previous_key_stops_publishing_it() -> None:
    keys = [SigningKeyState("prev", "previous", retired_at=NOW), SigningKeyState("cur", "current")]
    after = domain.previous_retired(keys, NOW + timedelta(hours=1))
    assert _statuses(after) == {"prev": "retired", "cur": "current"}
    assert next(k for k in after if k.kid == "prev").retired_at == NOW


def test_a_private_part_is_destroyed_only_after_the_grace_period_and_never_while_the_key_signs() -> None:
    grace = 3600.0
    retired = SigningKeyState("r", "retired", retired_at=NOW)
    previous = SigningKeyState("p", "previous", retired_at=NOW)
    assert not domain.private_part_expired(retired, NOW + timedelta(seconds=3599), grace)
    assert domain.private_part_expired(retired, NOW + timedelta(seconds=3600), grace)
    assert domain.private_part_expired(previous, NOW + timedelta(hours=2), grace)
    for signing in (SigningKeyState("c", "current"), SigningKeyState("n", "next", activates_at=NOW)):
        assert not domain.private_part_expired(signing, NOW + timedelta(days=365), grace)
    gone = SigningKeyState("g", "retired", retired_at=NOW, has_private_part=False)
    assert not domain.private_part_expired(gone, NOW + timedelta(days=1), grace)


def test_the_key_file_holds_the_newest_key_first_and_the_one_before_it_with_private_parts() -> None:
    keys = [SigningKeyState("prev", "previous"), SigningKeyState("cur", "current"),
            SigningKeyState("nxt", "next"), SigningKeyState("old", "retired")]
    assert [k.kid for k in domain.key_file_keys(keys)] == ["nxt", "cur"]
    without_next = [k for k in keys if k.kid != "nxt"]
    assert [k.kid for k in domain.key_file_keys(without_next)] == ["cur", "prev"]
    destroyed = [SigningKeyState("prev", "previous", has_private_part=False), SigningKeyState("cur", "current")]
    assert [k.kid for k in domain.key_file_keys(destroyed)] == ["cur"]
