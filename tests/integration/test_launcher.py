"""`refnet up` as `make run` uses it: everything ready, registry first, one launcher per checkout, Ctrl-C stops
the services before the broker and PostgreSQL and leaves nothing behind, logs that stay JSON, clear port errors.

Starting a stack costs about 20 s of CPU: the tests marked below share one (``stack``), and the last of them
stops it with a Ctrl-C.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from deploy.launcher.infra import free_port
from deploy.launcher.stack import STARTUP_ORDER

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("registry", "intake", "referral", "audit", "console")


def launcher_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REFNET_DATABASE_URL", "REFNET_KAFKA_BOOTSTRAP")}
    env.update({
        "REFNET_HOME": str(home),
        "REFNET_PG_PORT": str(free_port()),
        "REFNET_BROKER_PORT": str(free_port()),
        **{f"REFNET_{name}_PORT": str(free_port()) for name in map(str.upper, SERVICES)},
    })
    return env


def refnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "deploy.launcher.cli", *args]


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class RunningStack:
    home: Path
    env: dict[str, str]
    launcher: subprocess.Popen[bytes]
    output: Path
    second_up_while_starting: subprocess.CompletedProcess[str] | None = None
    stale_pid: int = 0
    processes: dict[str, psutil.Process] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.home / "state.json"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One `refnet up`, as a terminal runs it (its own process group, which Ctrl-C signals as a whole).

    Its home holds the state file of a launcher that died without cleaning up (a fresh start must not mind),
    and a second `refnet up` is run while it starts (it must leave the starting stack alone).
    """
    home = tmp_path_factory.mktemp("launcher") / ".refnet"
    home.mkdir()
    env = launcher_env(home)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (home / "state.json").write_text(json.dumps({
        "launcher_pid": dead.pid, "database_server": "-", "broker": "127.0.0.1:1", "pids": {"registry": dead.pid},
        "services": {name: "http://127.0.0.1:1" for name in SERVICES}}))
    output = home.parent / "launcher.out"
    with output.open("wb") as out:
        launcher = subprocess.Popen(refnet("up"), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    running = RunningStack(home, env, launcher, output, stale_pid=dead.pid)
    try:
        deadline = time.monotonic() + 120
        while "PostgreSQL 18 on" not in output.read_text():  # starting: its PostgreSQL holds its port
            assert launcher.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the launcher did not start PostgreSQL"
            time.sleep(0.05)
        running.second_up_while_starting = subprocess.run(refnet("up"), cwd=REPO, env=env, capture_output=True,
                                                          text=True, timeout=60)
        while not _state_of(home, launcher.pid):
            assert launcher.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the stack did not come up within 120 s"
            time.sleep(0.5)
        running.processes = {name: psutil.Process(pid) for name, pid in _state_of(home, launcher.pid)["pids"].items()}
        yield running
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGINT)
            launcher.wait(90)


def _state_of(home: Path, launcher_pid: int) -> dict:  # type: ignore[type-arg]
    try:
        state = json.loads((home / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if state.get("launcher_pid") == launcher_pid else {}


def test_up_serves_every_service_after_a_launcher_that_died_and_status_reports_it(stack: RunningStack) -> None:
    assert "removing the state of an earlier launcher" in stack.output.read_text()
    status = subprocess.run(refnet("status", "--json"), cwd=REPO, env=stack.env, capture_output=True, check=True)
    report = json.loads(status.stdout)
    assert report["launcher_pid"] == stack.launcher.pid
    assert {name: s["state"] for name, s in report["services"].items()} == dict.fromkeys(SERVICES, "ready")
    for service in report["services"].values():  # the figures /readyz gives, or null while it gives none
        assert "outbox" in service and (service["outbox"] is None or "retained" in service["outbox"])
    assert report["broker"] == f"127.0.0.1:{stack.env['REFNET_BROKER_PORT']}"
    assert set(stack.processes) >= {*SERVICES, "postgres", "broker"}
    table = subprocess.run(refnet("status"), cwd=REPO, env={**stack.env, "COLUMNS": "200"}, capture_output=True,
                           text=True, check=True).stdout
    assert "outbox rows kept" in table and "last republish" in table and f"launcher pid: {stack.launcher.pid}" in table


def test_each_service_starts_once_the_one_it_reads_from_is_ready(stack: RunningStack) -> None:
    """registry, referral, intake, audit: after a restart each reads what the one before published again."""
    # Process start times count from the boot time, which is whole seconds: measured against the wall clock the
    # logs use, with a process started now.
    now = subprocess.Popen(["sleep", "1"])
    offset = time.time() - psutil.Process(now.pid).create_time()
    now.wait()
    for before, after in itertools.pairwise(STARTUP_ORDER):
        ready = _log_events(stack.home / "logs" / f"{before}.log", "service_started")[0]
        # Started once the one before answered /readyz with 200, which is after its startup finished (0.1 s
        # for clock ticks; started together, they would start seconds before).
        assert stack.processes[after].create_time() + offset > ready - 0.1, (before, after)


def _log_events(path: Path, event: str) -> list[float]:
    from datetime import datetime

    return [datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
            for line in map(json.loads, path.read_text().splitlines()) if line.get("event") == event]


def test_a_second_up_leaves_the_running_stack_alone_and_says_where_it_is(stack: RunningStack) -> None:
    starting = stack.second_up_while_starting
    assert starting is not None and starting.returncode == 0, starting
    assert "starting or stopping" in starting.stdout and str(stack.launcher.pid) in starting.stdout
    before = stack.state_file.read_bytes()
    second = subprocess.run(refnet("up"), cwd=REPO, env={**stack.env, "COLUMNS": "200"}, capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already running" in second.stdout and f"launcher pid {stack.launcher.pid}" in second.stdout
    for service in SERVICES:
        assert f"http://127.0.0.1:{stack.env[f'REFNET_{service.upper()}_PORT']}" in second.stdout
    assert "in use" not in second.stdout
    assert stack.state_file.read_bytes() == before
    assert stack.launcher.poll() is None and not any(gone(p) for p in stack.processes.values())
    status = subprocess.run(refnet("status", "--json"), cwd=REPO, env=stack.env, capture_output=True, check=True)
    assert {s["state"] for s in json.loads(status.stdout)["services"].values()} == {"ready"}


def test_ctrl_c_stops_services_then_broker_then_postgres_and_every_log_line_is_json(stack: RunningStack) -> None:
    """The terminal signals the launcher's whole process group; the children, in sessions of their own, are
    stopped by the launcher in order. Runs last: it stops the shared stack."""
    processes = stack.processes
    children = psutil.Process(stack.launcher.pid).children(recursive=True)
    os.killpg(stack.launcher.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    ended: dict[str, float] = {}
    deadline = time.monotonic() + 90
    while len(ended) < len(processes) and time.monotonic() < deadline:
        for name, process in processes.items():
            if name not in ended and gone(process):
                ended[name] = time.monotonic()
        time.sleep(0.01)
    assert stack.launcher.wait(30) == 0, stack.output.read_text()
    assert set(ended) == set(processes), f"still running: {set(processes) - set(ended)}"
    last_service = max(ended[name] for name in SERVICES)
    assert last_service < ended["broker"] < ended["postgres"], ended
    assert "stopped" in stack.output.read_text()

    time.sleep(0.5)
    alive = [p for p in children if not gone(p)]
    assert alive == [], f"left behind: {[p.name() for p in alive]}"
    assert not stack.state_file.exists()
    for service in SERVICES:
        lines = (stack.home / "logs" / f"{service}.log").read_text().splitlines()
        assert lines
        for line in lines:
            try:
                json.loads(line)
            except ValueError:
                pytest.fail(f"{service}.log: not JSON: {line!r}")


def test_a_taken_port_is_a_clear_error_naming_the_setting(tmp_path: Path) -> None:
    env = launcher_env(tmp_path / ".refnet")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["REFNET_INTAKE_PORT"])))
        squatter.listen()
        result = subprocess.run(refnet("up"), cwd=REPO, env=env, capture_output=True, timeout=60)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 2, output
    assert env["REFNET_INTAKE_PORT"] in output and "REFNET_INTAKE_PORT" in output
    assert not (tmp_path / ".refnet" / "state.json").exists()


async def test_topics_ensure_creates_every_contract_topic_and_its_dlq(infra) -> None:  # type: ignore[no-untyped-def]
    from aiokafka.admin import AIOKafkaAdminClient

    from shared.topics import ALL_TOPICS

    env = {**os.environ, "REFNET_KAFKA_BOOTSTRAP": infra.bootstrap}
    for _ in range(2):  # and again: it is idempotent
        subprocess.run(refnet("topics", "ensure"), cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap)
    await admin.start()
    try:
        present = set(await admin.list_topics())
    finally:
        await admin.close()
    assert {*ALL_TOPICS, *(t + ".dlq" for t in ALL_TOPICS)} <= present
