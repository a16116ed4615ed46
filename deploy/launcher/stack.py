"""The local stack: PostgreSQL, the broker, the four services and the console, started and stopped together.

Everything lives under ``.refnet/`` (data, logs, credentials, keys, ``state.json``). ``REFNET_DATABASE_URL``
(a server URL) and ``REFNET_KAFKA_BOOTSTRAP`` make the stack use external infrastructure instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import psutil

from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.infra import Broker, PortInUse, Postgres, _die_with_parent, port_is_free
from services.console.settings import CONSOLE_PORT
from shared.kafka import dlq_topic, ensure_topics
from shared.settings import DEFAULT_PORTS, SERVICE_NAMES
from shared.topics import ALL_TOPICS

#: The order ``start_services`` starts the services in (see there).
STARTUP_ORDER = ("registry", "referral", "intake", "audit")
assert sorted(STARTUP_ORDER) == sorted(SERVICE_NAMES)
#: The web console: a service of the stack like the four (its database, migrations, process), started after
#: them (it only calls them), and only when it has a port (a stack configured for the four APIs alone has none).
CONSOLE = "console"
STACK_PORTS = {**DEFAULT_PORTS, CONSOLE: CONSOLE_PORT}


def refnet_home() -> Path:
    return Path(os.environ.get("REFNET_HOME", Path.cwd() / ".refnet")).resolve()


@dataclass
class StackConfig:
    home: Path
    pg_port: int = 55432
    broker_port: int = 9092
    service_ports: dict[str, int] = field(default_factory=lambda: dict(STACK_PORTS))
    external_database: str = ""
    external_broker: str = ""

    @classmethod
    def from_env(cls) -> StackConfig:
        ports = {name: int(os.environ.get(f"REFNET_{name.upper()}_PORT", port))
                 for name, port in STACK_PORTS.items()}
        return cls(
            home=refnet_home(),
            pg_port=int(os.environ.get("REFNET_PG_PORT", 55432)),
            broker_port=int(os.environ.get("REFNET_BROKER_PORT", 9092)),
            service_ports=ports,
            external_database=os.environ.get("REFNET_DATABASE_URL", ""),
            external_broker=os.environ.get("REFNET_KAFKA_BOOTSTRAP", ""),
        )


def started_at(pid: int) -> float | None:
    """When process ``pid`` started (None if it has ended): with the pid, it names one process, not a reused pid."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.Error:
        return None


@dataclass
class StackState:
    """What ``refnet status`` and ``refnet down`` read: written by ``refnet up`` once every service is ready."""

    launcher_pid: int
    database_server: str
    broker: str
    services: dict[str, str]
    pids: dict[str, int]
    # Start times of the launcher and of each process in ``pids``: a pid alone may since belong to another process.
    launcher_started: float | None = None
    started: dict[str, float] = field(default_factory=dict)

    def save(self, home: Path) -> None:
        # Whole or not at all: readers poll for the file and read it as soon as it appears.
        path = home / "state.json"
        partial = home / f".state.json.{os.getpid()}"
        partial.write_text(json.dumps(asdict(self), indent=2))
        partial.replace(path)

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        """The state file, or None if there is none or it is not one (a file we cannot read describes no stack)."""
        try:
            data = json.loads((home / "state.json").read_text())
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError):
            return None

    def launcher_alive(self) -> bool:
        """Whether the launcher that wrote this is still running (a state file outlives a launcher killed hard)."""
        started = started_at(self.launcher_pid) if self.launcher_pid > 0 else None
        if started is None:
            return False
        if self.launcher_started is not None:
            return abs(started - self.launcher_started) < 0.01
        with contextlib.suppress(psutil.Error):  # written before start times were recorded: look at the command
            command = psutil.Process(self.launcher_pid).cmdline()
            return "up" in command and any(part == "deploy.launcher.cli" or Path(part).name == "refnet"
                                           for part in command)
        return False

    def alive_pids(self) -> dict[str, int]:
        """The processes of ``pids`` that still run: the same pid with the same start time."""
        alive = {}
        for name, pid in self.pids.items():
            started = started_at(pid)
            if started is not None and name in self.started and abs(started - self.started[name]) < 0.01:
                alive[name] = pid
        return alive


class LauncherLock:
    """Held by the one ``refnet up`` that owns a REFNET_HOME, for its whole life.

    An flock on ``launcher.lock``: the kernel releases it when the launcher dies, however it dies, so a lock
    that cannot be taken means a live launcher (starting, running or stopping), and a state file found while
    holding it was left by a dead one. The file holds the holder's pid, for messages.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / "launcher.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> int | None:
        """The pid the holder wrote (None if it has not written it yet)."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


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
        self.extra_env: dict[str, dict[str, str]] = {name: {} for name in self.names}
        self._state_saved = False

    @property
    def names(self) -> tuple[str, ...]:
        """The services of this stack: the four, then the console if it has a port."""
        return (*SERVICE_NAMES, *((CONSOLE,) if CONSOLE in self.config.service_ports else ()))

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
            for service in self.names:
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
            # The embedded broker forgets everything when it stops: the outboxes keep what they published for
            # ever, to publish it again at the next start (shared/outbox.py).
            "REFNET_OUTBOX_RETENTION_DAYS": "0",
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
        for service in self.names:
            subprocess.run([sys.executable, "-m", "deploy.launcher.cli", "migrate", service],
                           env=self.service_env(service), check=True, capture_output=True,
                           preexec_fn=_die_with_parent, start_new_session=True)
        self.say("migrations applied")

    def prepare_services(self) -> None:
        """Each service's development keys and demo data (``deploy/launcher/bootstrap/<name>.py``)."""
        for service in self.names:
            try:
                module = importlib.import_module(f"deploy.launcher.bootstrap.{service}")
            except ModuleNotFoundError as exc:
                if exc.name != f"deploy.launcher.bootstrap.{service}":
                    raise
                continue
            ctx = BootstrapContext(
                service=service,
                home=self.config.home,
                database_url=service_database_url(self.server_url, service),
                service_urls={name: self.url(name) for name in self.names},
            )
            module.prepare(ctx)
            self.extra_env[service].update(ctx.env)

    def start_services(self) -> None:
        """One at a time, each once the one before is ready, in the order their read models depend on each
        other: the registry (agencies, services, keys), referral (which reads the registry), intake (which reads
        referrals: a recipient's read is decided from them), audit (which reads everything). A service is ready
        once its read models have caught up with what the broker holds; after a restart the broker holds only
        what each relay has published again, so a service judged before its sources had done so would serve
        from a read model that is not whole -- a recipient refused a case it may read, say. The console last: it
        reads nothing from the broker, and calls the four."""
        for service in (*STARTUP_ORDER, *(name for name in self.names if name not in STARTUP_ORDER)):
            self.start_service(service)
            self.wait_ready(services=[service])
            self.say(f"{service} ready")

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
            preexec_fn=_die_with_parent, start_new_session=True,
        )
        log.close()
        return self.services[service]

    def wait_ready(self, timeout: float = 90.0, services: list[str] | None = None) -> None:
        """Until each started service (or each of ``services``) answers /readyz with 200."""
        deadline = time.monotonic() + timeout
        pending = set(self.services if services is None else services)
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
        started = {name: when for name, pid in pids.items() if (when := started_at(pid)) is not None}
        return StackState(
            launcher_pid=os.getpid(),
            database_server=_redact(self.server_url),
            broker=self.bootstrap,
            services={name: self.url(name) for name in self.names},
            pids=pids,
            launcher_started=started_at(os.getpid()),
            started=started,
        )

    def save_state(self) -> StackState:
        """Write ``state.json`` (which ``stop`` then removes: it removes no state file it did not write)."""
        state = self.state()
        state.save(self.config.home)
        self._state_saved = True
        return state

    def stop(self, grace: float = 15.0) -> None:
        """Services first (SIGTERM, ``grace`` seconds, then SIGKILL), while the broker and PostgreSQL they
        are closing their connections to still run; then the broker; then PostgreSQL."""
        for proc in self.services.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.services.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.services.clear()
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self._state_saved:
            with contextlib.suppress(FileNotFoundError):
                (self.config.home / "state.json").unlink()
            self._state_saved = False


def _redact(url: str) -> str:
    """A database URL without its password, for screens and state files."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


def probe(url: str) -> str:
    return readiness(url)[0]


def readiness(url: str) -> tuple[str, dict[str, Any] | None]:
    """A service's state ("ready", "not ready", "down") and the ``outbox`` figures its /readyz body carries
    (None when it carries none)."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError:
        return "down", None
    state = "ready" if response.status_code == 200 else "not ready"
    try:
        outbox = response.json().get("outbox")
    except (ValueError, AttributeError):
        return state, None
    return state, outbox if isinstance(outbox, dict) else None
