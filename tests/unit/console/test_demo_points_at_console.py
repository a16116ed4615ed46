"""`refnet demo` ends by pointing at the console and the demo people to sign in as -- never their secrets."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from deploy.launcher.demo import Demo
from deploy.launcher.stack import StackState

SERVICES = {name: f"http://127.0.0.1:{port}" for name, port in
            (("registry", 8001), ("intake", 8002), ("referral", 8003), ("audit", 8004), ("console", 8005))}


def test_the_demo_names_the_console_and_who_to_sign_in_as(tmp_path: Path) -> None:
    people = tmp_path / "credentials" / "people"
    people.mkdir(parents=True)
    (people / "iom-caseworker.json").write_text(json.dumps({
        "login": "iom-caseworker", "agency": "iom", "roles": ["caseworker"], "password": "S3CRET-PASSWORD",
        "totp_secret": "JBSWY3DPEHPK3PXP"}))
    output = Console(record=True, width=200)
    state = StackState(launcher_pid=1, database_server="db", broker="broker", services=SERVICES, pids={})
    Demo(output, state, tmp_path, ack_timeout=0, complete=True).point_at_console()
    text = output.export_text()
    assert "http://127.0.0.1:8005" in text and "iom-caseworker" in text and "caseworker" in text
    assert str(people) in text
    assert "S3CRET-PASSWORD" not in text and "JBSWY3DPEHPK3PXP" not in text


def test_no_console_no_pointer(tmp_path: Path) -> None:
    output = Console(record=True, width=200)
    four = {k: v for k, v in SERVICES.items() if k != "console"}
    state = StackState(launcher_pid=1, database_server="db", broker="broker", services=four, pids={})
    Demo(output, state, tmp_path, ack_timeout=0, complete=True).point_at_console()
    assert output.export_text() == ""
