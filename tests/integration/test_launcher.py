"""`refnet up` as `make run` uses it: everything ready, Ctrl-C leaves nothing behind, clear port errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from deploy.launcher.infra import free_port

REPO = Path(__file__).resolve().parents[2]


def launcher_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REFNET_DATABASE_URL", "REFNET_KAFKA_BOOTSTRAP")}
    env.update({
        "REFNET_HOME": str(home),
        "REFNET_PG_PORT": str(free_port()),
        "REFNET_BROKER_PORT": str(free_port()),
        **{f"REFNET_{name}_PORT": str(free_port()) for name in ("REGISTRY", "INTAKE", "REFERRAL", "AUDIT")},
    })
    return env


def refnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "deploy.launcher.cli", *args]


def test_up_serves_every_service_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    env = launcher_env(tmp_path / ".refnet")
    launcher = subprocess.Popen(refnet("up"), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    state_file = tmp_path / ".refnet" / "state.json"
    try:
        deadline = time.monotonic() + 120
        while not state_file.exists():
            assert launcher.poll() is None, launcher.stdout.read().decode() if launcher.stdout else ""
            assert time.monotonic() < deadline, "the stack did not come up within 120 s"
            time.sleep(0.5)
        status = subprocess.run(refnet("status", "--json"), cwd=REPO, env=env, capture_output=True, check=True)
        report = json.loads(status.stdout)
        assert {name: s["state"] for name, s in report["services"].items()} == {
            "registry": "ready", "intake": "ready", "referral": "ready", "audit": "ready"}
        assert report["broker"] == f"127.0.0.1:{env['REFNET_BROKER_PORT']}"
        pids = json.loads(state_file.read_text())["pids"]
        assert set(pids) >= {"registry", "intake", "referral", "audit", "postgres", "broker"}
        children = psutil.Process(launcher.pid).children(recursive=True)
    finally:
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C sends
        launcher.wait(60)
    time.sleep(1)
    alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left behind: {[p.name() for p in alive]}"
    assert not state_file.exists()


def test_a_taken_port_is_a_clear_error_naming_the_setting(tmp_path: Path) -> None:
    env = launcher_env(tmp_path / ".refnet")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["REFNET_INTAKE_PORT"])))
        squatter.listen()
        result = subprocess.run(refnet("up"), cwd=REPO, env=env, capture_output=True, timeout=60)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 2, output
    assert env["REFNET_INTAKE_PORT"] in output and "REFNET_INTAKE_PORT" in output


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
