"""The local stack: PostgreSQL, the broker and the four services, started and stopped together.

Everything lives under ``.refnet/`` (data, logs, credentials, keys, ``state.json``). ``REFNET_DATABASE_URL``
(a server URL) and ``REFNET_KAFKA_BOOTSTRAP`` make the stack use external infrastructure instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.infra import Broker, PortInUse, Postgres, _die_with_parent, port_is_free
from shared.kafka import dlq_topic, ensure_topics
from shared.settings import DEFAULT_PORTS, SERVICE_NAMES
from shared.topics import ALL_TOPICS


def refnet_home() -> Path:
    return Path(os.environ.get("REFNET_HOME", Path.cwd() / ".refnet")).resolve()


@dataclass
class StackConfig:
    home: Path
    pg_port: int = 55432
    broker_port: int = 9092
    service_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    external_database: str = ""
    external_broker: str = ""

    @classmethod
    def from_env(cls) -> StackConfig:
        ports = {name: int(os.environ.get(f"REFNET_{name.upper()}_PORT", port))
                 for name, port in DEFAULT_PORTS.items()}
        return cls(
            home=refnet_home(),
            pg_port=int(os.environ.get("REFNET_PG_PORT", 55432)),
            broker_port=int(os.environ.get("REFNET_BROKER_PORT", 9092)),
            service_ports=ports,
            external_database=os.environ.get("REFNET_DATABASE_URL", ""),
            external_broker=os.environ.get("REFNET_KAFKA_BOOTSTRAP", ""),
        )


@dataclass
class StackState:
    """What ``refnet status`` and ``refnet down`` read: written by ``refnet up``."""

    launcher_pid: int
    database_server: str
    broker: str
    services: dict[str, str]
    pids: dict[str, int]

    def save(self, home: Path) -> None:
        path = home / "state.json"
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        path = home / "state.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def service_database_url(server_url: str, service: str) -> str:
    base = server_url.replace("postgresql+asyncpg://", "postgresql://").rstrip("/")
    if base.count("/") > 2:  # a URL naming a database: keep the server part
        base = base.rsplit("/", 1)[0]
    return f"{base}/refnet_{service}".replace("postgresql://", "postgresql+asyncpg://", 1)


class Stack:
    def __init__(self, config: StackConfig, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.say = say
        self.postgres: Postgres | None = None
        self.broker: Broker | None = None
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.server_url = ""
        self.bootstrap = ""
        self.extra_env: dict[str, dict[str, str]] = {name: {} for name in SERVICE_NAMES}

    @property
    def logs(self) -> Path:
        return self.config.home / "logs"

    def check_ports(self) -> None:
        checks: list[tuple[int, str]] = []
        if not self.config.external_database:
            checks.append((self.config.pg_port, "REFNET_PG_PORT"))
        if not self.config.external_broker:
            checks.append((self.config.broker_port, "REFNET_BROKER_PORT"))
        checks += [(port, f"REFNET_{name.upper()}_PORT") for name, port in self.config.service_ports.items()]
        for port, setting in checks:
            if not port_is_free(port):
                raise PortInUse(port, setting)

    def start_infrastructure(self) -> None:
        self.config.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if self.config.external_database:
            self.server_url = self.config.external_database
            self.say(f"using external PostgreSQL at {_redact(self.server_url)}")
        else:
            self.postgres = Postgres(self.config.home / "pgdata", self.config.pg_port, self.logs / "postgres.log")
            self.postgres.start()
            self.server_url = f"postgresql://postgres@127.0.0.1:{self.config.pg_port}"
            self.say(f"PostgreSQL 18 on 127.0.0.1:{self.config.pg_port}")
            for service in SERVICE_NAMES:
                self.postgres.ensure_database(f"refnet_{service}")
        if self.config.external_broker:
            self.bootstrap = self.config.external_broker
            self.say(f"using external broker at {self.bootstrap}")
        else:
            self.broker = Broker(self.config.broker_port, self.logs / "broker.log")
            self.broker.start()
            self.bootstrap = self.broker.bootstrap
            self.say(f"Kafka-protocol broker (Tansu) on {self.bootstrap}")
        # Topics exist before any service joins a consumer group, as in production (compose's topics-init,
        # the cluster's KafkaTopic resources): a group that joins while its topic is still being created can
        # be left without the partition on the embedded broker.
        asyncio.run(ensure_topics(self.bootstrap, [*ALL_TOPICS, *map(dlq_topic, ALL_TOPICS)]))

    def service_env(self, service: str) -> dict[str, str]:
        prefix = f"REFNET_{service.upper()}_"
        registry = f"http://127.0.0.1:{self.config.service_ports['registry']}"
        return {
            # The stack runs on one machine: its demo case systems and agencies' key sets are on 127.0.0.1,
            # over plain http (production refuses both; the environment may say so here too).
            "REFNET_OUTBOUND_ALLOW_HTTP": "true",
            "REFNET_OUTBOUND_ALLOW_PRIVATE": "true",
            **os.environ,
            f"{prefix}DATABASE_URL": service_database_url(self.server_url, service),
            f"{prefix}PORT": str(self.config.service_ports[service]),
            f"{prefix}HOST": "127.0.0.1",
            "REFNET_KAFKA_BOOTSTRAP": self.bootstrap,
            "REFNET_ISSUER": os.environ.get("REFNET_ISSUER", registry),
            "REFNET_HOME": str(self.config.home),
            **{f"REFNET_{name.upper()}_URL": self.url(name) for name in SERVICE_NAMES},
            **self.extra_env[service],
        }

    def migrate(self) -> None:
        for service in SERVICE_NAMES:
            subprocess.run([sys.executable, "-m", "deploy.launcher.cli", "migrate", service],
                           env=self.service_env(service), check=True, capture_output=True)
        self.say("migrations applied")

    def prepare_services(self) -> None:
        """Each service's development keys and demo data (``services/<name>/bootstrap.py``)."""
        for service in SERVICE_NAMES:
            try:
                module = importlib.import_module(f"services.{service}.bootstrap")
            except ModuleNotFoundError as exc:
                if exc.name != f"services.{service}.bootstrap":
                    raise
                continue
            ctx = BootstrapContext(
                service=service,
                home=self.config.home,
                database_url=service_database_url(self.server_url, service),
                service_urls={name: self.url(name) for name in SERVICE_NAMES},
            )
            module.prepare(ctx)
            self.extra_env[service].update(ctx.env)

    def start_services(self) -> None:
        for service in SERVICE_NAMES:
            self.start_service(service)

    def start_service(self, service: str) -> subprocess.Popen[bytes]:
        """Start one service's process, or start it again after it died (its log is appended to).

        Services keep no state outside their database and the broker, so a restarted process picks up where
        the dead one stopped: the outbox rows it had not published, the offsets it had not committed.
        """
        previous = self.services.get(service)
        if previous is not None and previous.poll() is None:
            raise RuntimeError(f"{service} is still running (pid {previous.pid})")
        log = open(self.logs / f"{service}.log", "ab")  # noqa: SIM115 -- the child keeps it
        self.services[service] = subprocess.Popen(
            [sys.executable, "-m", "deploy.launcher.cli", "serve", service],
            env=self.service_env(service), stdout=log, stderr=log,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return self.services[service]

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.services)
        while pending and time.monotonic() < deadline:
            for service in sorted(pending):
                proc = self.services[service]
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with {proc.returncode}; see {self.logs / service}.log")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.url(service)}/readyz", timeout=2).status_code == 200:
                        pending.discard(service)
            time.sleep(0.3)
        if pending:
            raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.config.service_ports[service]}"

    def state(self) -> StackState:
        pids = {name: proc.pid for name, proc in self.services.items()}
        if self.postgres and self.postgres.proc:
            pids["postgres"] = self.postgres.proc.pid
        if self.broker and self.broker.proc:
            pids["broker"] = self.broker.proc.pid
        return StackState(
            launcher_pid=os.getpid(),
            database_server=_redact(self.server_url),
            broker=self.bootstrap,
            services={name: self.url(name) for name in SERVICE_NAMES},
            pids=pids,
        )

    def stop(self) -> None:
        for proc in self.services.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.services.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.services.clear()
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.config.home / "state.json").unlink()


def _redact(url: str) -> str:
    """A database URL without its password, for screens and state files."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


def probe(url: str) -> str:
    try:
        response = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError:
        return "down"
    return "ready" if response.status_code == 200 else "not ready"
