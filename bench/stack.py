"""The whole stack as `make run` starts it (`refnet up`, in a scratch home and on free ports), for benchmarks.

Tokens come from `refnet token --as <agency>` exactly as an integrator gets them; the stack's PostgreSQL is
reachable for baselines and for building large data sets quickly (bulk SQL), never for measured requests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from deploy.launcher.infra import free_port

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("registry", "intake", "referral", "audit")
TOKEN_REUSE_SECONDS = 420.0  # tokens live 600 s; take a fresh one well before


@dataclass
class BenchStack:
    """`refnet up` in a subprocess; ``env`` carries the ports and any setting the benchmark changes."""

    extra_env: dict[str, str] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="refnet-bench-")))
    env: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    _launcher: subprocess.Popen[bytes] | None = None
    _tokens: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.workdir / ".refnet"

    def start(self, timeout: float = 240.0) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("REFNET_DATABASE_URL", "REFNET_KAFKA_BOOTSTRAP")}
        env.update({
            "REFNET_HOME": str(self.home),
            "REFNET_PG_PORT": str(free_port()),
            "REFNET_BROKER_PORT": str(free_port()),
            **{f"REFNET_{name.upper()}_PORT": str(free_port()) for name in SERVICES},
            "REFNET_AUDIT_FULL_VERIFY_INTERVAL_SECONDS": "0",  # the benchmark times the full one, repeatedly
            **self.extra_env,
        })
        self.env = env
        log = open(self.workdir / "launcher.log", "wb")  # noqa: SIM115 -- the launcher writes to it until stop
        self._launcher = subprocess.Popen([sys.executable, "-m", "deploy.launcher.cli", "up"], cwd=REPO, env=env,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        state_file = self.home / "state.json"
        deadline = time.monotonic() + timeout
        while not state_file.exists():
            if self._launcher.poll() is not None:
                raise RuntimeError(f"the stack did not start:\n{self.launcher_log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the stack did not come up within {timeout:.0f} s:\n{self.launcher_log()}")
            time.sleep(0.5)
        self.state = json.loads(state_file.read_text())

    def launcher_log(self) -> str:
        path = self.workdir / "launcher.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self._launcher is not None and self._launcher.poll() is None:
            self._launcher.send_signal(signal.SIGINT)  # what Ctrl-C sends: the launcher stops everything
            try:
                self._launcher.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self._launcher.pid, signal.SIGKILL)
                self._launcher.wait()
        self._launcher = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- where things are --------------------------------------------------------------------------------

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.env[f'REFNET_{service.upper()}_PORT']}"

    @property
    def pg_port(self) -> int:
        return int(self.env["REFNET_PG_PORT"])

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.env['REFNET_BROKER_PORT']}"

    def pg_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{database}"

    async def pg(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(self.pg_dsn(database))

    def pids(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in self.state.get("pids", {}).items()}

    # -- who calls ---------------------------------------------------------------------------------------

    def credentials(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "credentials" / f"{name}.json").read_text())
        return data

    def agency(self, name: str) -> str:
        return str(self.credentials(name)["agency_id"])

    def token(self, name: str, *scopes: str) -> str:
        """`refnet token --as <name>`, reused while it is fresh."""
        key = (name, " ".join(scopes))
        cached = self._tokens.get(key)
        if cached is not None and time.monotonic() - cached[0] < TOKEN_REUSE_SECONDS:
            return cached[1]
        args = [sys.executable, "-m", "deploy.launcher.cli", "token", "--as", name]
        for scope in scopes:
            args += ["--scope", scope]
        out = subprocess.run(args, cwd=REPO, env=self.env, capture_output=True, text=True, check=True)
        token = out.stdout.strip()
        self._tokens[key] = (time.monotonic(), token)
        return token

    def headers(self, name: str, purpose: str = "case_management") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(name)}", "X-Purpose": purpose,
                "X-Acting-User": "bench.worker"}
