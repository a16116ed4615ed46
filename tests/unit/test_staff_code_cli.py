"""`refnet staff code <login>`: the demo person's current TOTP code from the local stack's file, so a newcomer
can sign in to the console without an authenticator app; nothing else is read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyotp
import pytest
from typer.testing import CliRunner

from deploy.launcher.cli import app

SECRET = pyotp.random_base32()


def test_prints_the_code_the_registry_will_accept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    people = tmp_path / "credentials" / "people"
    people.mkdir(parents=True)
    (people / "iom-caseworker.json").write_text(json.dumps({"login": "iom-caseworker", "totp_secret": SECRET}))
    monkeypatch.setenv("REFNET_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["staff", "code", "iom-caseworker"])
    assert result.exit_code == 0, result.output
    code = re.match(r"(\d{6})  \(good for \d+ s more, once\)", result.output)
    assert code and pyotp.TOTP(SECRET).verify(code[1], valid_window=1)


@pytest.mark.parametrize("login", ["nobody", "../../etc/passwd", "Iom Caseworker"])
def test_refuses_what_is_not_a_local_persons_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  login: str) -> None:
    monkeypatch.setenv("REFNET_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["staff", "code", login])
    assert result.exit_code == 2 and "Traceback" not in result.output
