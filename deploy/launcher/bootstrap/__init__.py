"""What a service may do when the local stack starts, before the services run.

A service that needs development keys or demo data has ``deploy/launcher/bootstrap/<name>.py`` with
``prepare(ctx: BootstrapContext) -> None``. It runs after every service's migrations, in the order
registry, intake, referral, audit, and may add environment variables for its service's process
(``ctx.env``), for instance the path of a key file it generated under ``ctx.home``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BootstrapContext:
    service: str
    home: Path  # .refnet/
    database_url: str  # this service's database (SQLAlchemy asyncpg URL)
    service_urls: dict[str, str]  # every service's base URL
    env: dict[str, str] = field(default_factory=dict)  # extra environment for this service's process

    @property
    def keys_dir(self) -> Path:
        path = self.home / "keys"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    @property
    def credentials_dir(self) -> Path:
        path = self.home / "credentials"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
