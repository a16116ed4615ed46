"""What audit's routes, consumers and jobs are given: one typed object, built by ``app.provide`` for the
process's life, and the dependency through which a route receives it."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.audit.jobs import Sequencer
from services.audit.service import Checkpoints, Entries, Ingest, Proofs, Verification
from shared.app import deps_of


@dataclass(frozen=True)
class Deps:
    """What audit's routes, consumer and jobs use: its use cases, and the sequencer the consumer wakes."""

    ingest: Ingest
    entries: Entries
    checkpoints: Checkpoints
    proofs: Proofs
    verification: Verification
    sequencer: Sequencer


async def deps(request: Request) -> Deps:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hop on every request.
    return deps_of(request, Deps)
