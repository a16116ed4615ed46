"""intake's background loops: re-sealing what an older release left in clear."""

from __future__ import annotations

import structlog

from services.intake.service import Sealing
from shared.loops import every

log = structlog.get_logger("refnet.intake")
#: How often intake looks for trafficking facts still in clear (older rows, or an older replica's writes while
#: a rolling upgrade runs); the first look is at start-up.
SEAL_SWEEP_SECONDS = 3600.0


async def seal_sweeps(sealing: Sealing, interval: float = SEAL_SWEEP_SECONDS) -> None:
    """Re-seal what an older release left in clear, now and then every ``interval`` (never crashes)."""

    async def sweep() -> None:
        if sealing.res.keys.keyring is not None:
            sealed = await sealing.seal_clear_facts()
            if sealed:
                log.info("trafficking_facts_sealed", cases=sealed)

    await every(interval, sweep, name="trafficking_facts_sweep")
