"""console's background loop: ended sessions are deleted (pages refuse them one by one in any case)."""

from __future__ import annotations

import structlog

from services.console.service import Sessions
from shared.loops import every

log = structlog.get_logger("refnet.console")


async def sweep_sessions(sessions: Sessions, interval_seconds: float = 60.0) -> None:
    async def once() -> None:
        removed = await sessions.sweep()
        if removed:
            log.info("console_sessions_swept", count=removed)

    await every(interval_seconds, once, name="console-session-sweep")
