"""A loopback HTTP server that misbehaves on purpose: answers that never end, or trickle a byte at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class HostileServer:
    """``mode``: "ok" (204), "json" (200 with ``body``), "endless" (200, bytes for ever) or "trickle"
    (200, one byte every ``trickle_seconds``). Records the Host header of each request."""

    mode: str = "ok"
    body: bytes = b""
    trickle_seconds: float = 0.1
    port: int = 0
    hosts: list[str] = field(default_factory=list)
    connections: int = 0
    sent_bytes: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "host":
                    self.hosts.append(value.strip())
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            if self.mode == "ok":
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            elif self.mode == "json":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(self.body)).encode() + b"\r\n\r\n" + self.body)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                chunk = b"x" * (64 * 1024 if self.mode == "endless" else 1)
                while True:
                    writer.write(chunk)
                    self.sent_bytes += len(chunk)
                    await writer.drain()
                    # endless: 6.4 MB/s, so a client that reads it all grows fast but not without limit
                    await asyncio.sleep(0.01 if self.mode == "endless" else self.trickle_seconds)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def hostile_server(mode: str = "ok", **options: object) -> AsyncIterator[HostileServer]:
    server = HostileServer(mode=mode, **options)  # type: ignore[arg-type]
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()
        # Handlers still streaming are cancelled with the loop's tasks; closing is enough here.
