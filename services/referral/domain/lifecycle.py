"""The referral lifecycle (docs/contract.md "Referral states"): who may make which move, with which reason code."""

from __future__ import annotations

from dataclasses import dataclass

from services.referral.domain.vocabulary import (
    FAIL_REASONS,
    HOLD_REASONS,
    OPEN_STATES,
    REJECT_REASONS,
    SENDER_CANCEL_REASONS,
    SYSTEM_CANCEL_REASONS,
    Party,
    Status,
)

# --- the lifecycle ------------------------------------------------------------------------------------------

#: (from, to) -> the one party that may make that move. Sender and system cancellations are added below for
#: every open state. This is docs/contract.md's diagram, and nothing else.
TRANSITIONS: dict[tuple[Status, Status], Party] = {
    (Status.requested, Status.received): Party.recipient,
    (Status.received, Status.accepted): Party.recipient,
    (Status.received, Status.rejected): Party.recipient,
    (Status.accepted, Status.in_progress): Party.recipient,
    (Status.in_progress, Status.completed): Party.recipient,
    (Status.in_progress, Status.on_hold): Party.recipient,
    (Status.on_hold, Status.in_progress): Party.recipient,
    (Status.in_progress, Status.failed): Party.recipient,
}

#: Which reason codes each target state requires (absent: none allowed but optional for on_hold).
REQUIRED_REASONS: dict[Status, frozenset[str]] = {
    Status.rejected: REJECT_REASONS,
    Status.failed: FAIL_REASONS,
}


def allowed_moves(current: Status, party: Party) -> list[Status]:
    """The states ``party`` may move a referral in ``current`` to, in a stable order."""
    moves = [to for (frm, to), who in TRANSITIONS.items() if frm == current and who == party]
    if current in OPEN_STATES and party in (Party.sender, Party.system):
        moves.append(Status.cancelled)
    return moves


def reason_codes_for(to: Status, party: Party) -> frozenset[str] | None:
    """The reason codes a move to ``to`` by ``party`` requires; None if it takes none (or only optional)."""
    if to is Status.cancelled:
        return SYSTEM_CANCEL_REASONS if party is Party.system else SENDER_CANCEL_REASONS
    return REQUIRED_REASONS.get(to)


class TransitionRefused(Exception):
    """Base of the lifecycle's refusals."""


@dataclass
class InvalidTransition(TransitionRefused):
    current: Status
    requested: str
    party: Party
    allowed: list[Status]

    def __str__(self) -> str:
        allowed = ", ".join(self.allowed) or "none"
        return (f"A {self.party} cannot move a referral from '{self.current}' to '{self.requested}'; "
                f"allowed: {allowed}.")


@dataclass
class ReasonCodeInvalid(TransitionRefused):
    to: Status
    given: str | None
    allowed: list[str]

    def __str__(self) -> str:
        if self.given is None:
            return f"Moving to '{self.to}' requires a reason_code, one of: {', '.join(self.allowed)}."
        return f"reason_code is not valid for '{self.to}'; one of: {', '.join(self.allowed)}."


@dataclass(frozen=True)
class Move:
    """An accepted transition, as it goes into the history."""

    frm: Status
    to: Status
    party: Party
    reason_code: str | None


def decide_transition(current: Status, to: str, party: Party, reason_code: str | None = None) -> Move:
    """Check one move of the lifecycle: who may make it, and the reason code it needs.

    Raises ``InvalidTransition`` (the move does not exist for this party from this state) or
    ``ReasonCodeInvalid`` (missing or unknown reason code).
    """
    allowed = allowed_moves(current, party)
    try:
        target = Status(to)
    except ValueError:
        raise InvalidTransition(current, to, party, allowed) from None
    if target not in allowed:
        raise InvalidTransition(current, to, party, allowed)
    codes = reason_codes_for(target, party)
    if codes is not None:
        if reason_code not in codes:
            raise ReasonCodeInvalid(target, reason_code, sorted(codes))
    elif target is Status.on_hold:
        if reason_code is not None and reason_code not in HOLD_REASONS:
            raise ReasonCodeInvalid(target, reason_code, sorted(HOLD_REASONS))
    elif reason_code is not None:
        raise ReasonCodeInvalid(target, reason_code, [])
    return Move(current, target, party, reason_code)
