"""The launcher's process plumbing, without a stack: a service process's output stays JSON, PostgreSQL run as
its own user still dies with the launcher, `refnet status` shows the outbox figures /readyz gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from deploy.launcher.cli import _outbox_cells

REPO = Path(__file__).resolve().parents[2]

NOISY_PROCESS = textwrap.dedent('''
    import asyncio, gc, logging, threading, warnings

    import structlog

    from shared.observability import configure_process_logging

    configure_process_logging("INFO", True)
    structlog.get_logger("refnet").info("ours")
    logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s: %s", 1, "refused")
    logging.getLogger("aiokafka.consumer").info("below the library threshold")
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    warnings.warn("a warning", UserWarning, stacklevel=1)
    thread = threading.Thread(target=lambda: 1 / 0, name="worker")
    thread.start()
    thread.join()

    class Finalizer:
        def __del__(self):
            raise RuntimeError("in __del__")

    Finalizer()
    gc.collect()

    async def fails():
        raise ValueError("never retrieved")

    async def main():
        asyncio.get_running_loop().create_task(fails())
        await asyncio.sleep(0.01)

    asyncio.run(main())
    gc.collect()
    raise SystemError("uncaught")
''')


def test_a_service_process_writes_only_json_lines_whatever_logs_or_fails() -> None:
    result = subprocess.run([sys.executable, "-c", NOISY_PROCESS], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # each line JSON, or this fails
    events = [(line.get("logger"), line["event"].split("\n")[0], line["level"]) for line in lines]
    assert events[:3] == [(None, "ours", "info"),
                          ("aiokafka.conn", "Unable connect to node with id 1: refused", "error"),
                          ("uvicorn.error", "Exception in ASGI application", "error")]
    assert "ZeroDivisionError" in lines[2]["exception"]
    assert any(logger == "py.warnings" and "UserWarning: a warning" in event for logger, event, _ in events)
    assert any(line.get("thread") == "worker" and line["event"] == "uncaught_exception" for line in lines)
    assert any(line["event"] == "unraisable_exception" and "in __del__" in line["exception"] for line in lines)
    assert any(logger == "asyncio" and "never retrieved" in line.get("exception", "")
               for (logger, _, _), line in zip(events, lines, strict=True))
    assert lines[-1]["event"] == "uncaught_exception" and "SystemError: uncaught" in lines[-1]["exception"]
    assert not any("below the library threshold" in event for _, event, _ in events)


PARENT = textwrap.dedent('''
    import os, signal, subprocess, sys, time

    from deploy.launcher.infra import _demote

    uid, gid = int(sys.argv[1]), int(sys.argv[2])

    def preexec():
        # A suite started in the background (`make test &`) runs with SIGINT ignored, and `sleep` would inherit
        # that; PostgreSQL, the real child, installs its own handler. So stand in for it.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _demote(uid, gid)

    child = subprocess.Popen(["sleep", "120"], preexec_fn=preexec, start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(120)
''')


def test_a_child_run_as_another_user_still_dies_when_the_launcher_is_killed() -> None:
    """PostgreSQL refuses to run as root, so a root launcher runs it as its own user: Linux clears the
    parent-death signal when a process changes user, so it must be asked for after the switch."""
    if os.geteuid() == 0:
        from deploy.launcher.infra import _ensure_system_user

        user = _ensure_system_user()
        ids = (user.pw_uid, user.pw_gid)
    else:  # no other user to become: the same ids (the check is then of the order only, not of the switch)
        ids = (os.getuid(), os.getgid())
    parent = subprocess.Popen([sys.executable, "-c", PARENT, *map(str, ids)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        assert child.uids().real == ids[0]
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, "outlived the launcher"
    finally:
        if child.is_running():
            child.kill()


def test_status_shows_the_outbox_figures_readyz_gives_and_a_dash_without_them() -> None:
    assert _outbox_cells(None) == ("-", "-", "-")
    assert _outbox_cells({"retained": 120, "unpublished": 0, "last_republish": None}) == ("120", "0", "never")
    retained, unpublished, last = _outbox_cells({
        "retained": 7, "unpublished": 2,
        "last_republish": {"topic": "refnet.intake.events", "reason": "[red]broker lost its topics[/red]",
                           "rows": 7, "at": "2026-12-03T10:00:00Z"}})
    assert (retained, unpublished) == ("7", "2")
    # Escaped: a reason is shown as written, not read as console markup.
    assert last == r"2026-12-03T10:00:00Z: 7 rows of refnet.intake.events (\[red]broker lost its topics\[/red])"
    assert _outbox_cells({"retained": "many", "unpublished": True}) == ("-", "-", "-")


def test_down_after_a_killed_launcher_stops_what_it_left_and_nothing_that_reused_a_pid(tmp_path: Path) -> None:
    home = tmp_path / ".refnet"
    home.mkdir()
    left = subprocess.Popen(["sleep", "120"], start_new_session=True)
    stranger = subprocess.Popen(["sleep", "120"], start_new_session=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        (home / "state.json").write_text(json.dumps({
            "launcher_pid": dead.pid, "launcher_started": 1.0, "database_server": "-", "broker": "127.0.0.1:1",
            "services": {"registry": "http://127.0.0.1:1"},
            "pids": {"registry": left.pid, "intake": stranger.pid},
            # The stranger's pid, but another start time: a process that took the pid of one that ended.
            "started": {"registry": psutil.Process(left.pid).create_time(),
                        "intake": psutil.Process(stranger.pid).create_time() - 100}}))
        env = {**os.environ, "REFNET_HOME": str(home)}
        status = subprocess.run([sys.executable, "-m", "deploy.launcher.cli", "status"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 1 and "is gone" in status.stdout, status.stdout
        down = subprocess.run([sys.executable, "-m", "deploy.launcher.cli", "down"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stdout + down.stderr
        assert left.wait(10) == -signal.SIGTERM
        assert stranger.poll() is None
        assert not (home / "state.json").exists()
    finally:
        for process in (left, stranger):
            if process.poll() is None:
                process.kill()
                process.wait()
