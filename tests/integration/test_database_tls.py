"""TLS to PostgreSQL: the pooled engine and the outbox relay's own asyncpg connection take the same settings,
verify the server (``verify-full``) and refuse one whose certificate the configured CA did not sign.

The server here accepts TLS connections only (``hostssl`` in pg_hba.conf), with a CA and server certificate
made in the test.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from deploy.launcher.infra import POSTGRES_BIN_PATH, Postgres, free_port
from shared.db import make_engine
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings


def _with_openssl(bin_dir: Path) -> bool:
    try:
        configure = subprocess.run([str(bin_dir / "pg_config"), "--configure"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return b"--with-openssl" in configure.stdout and (bin_dir / "postgres").exists()


def tls_bin_dir() -> Path:
    """The wheel's PostgreSQL is built without OpenSSL; then a system one that has it (Debian's)."""
    for candidate in (POSTGRES_BIN_PATH, *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)):
        if _with_openssl(candidate):
            return candidate
    raise RuntimeError("no PostgreSQL built with OpenSSL on this machine")


class TlsPostgres(Postgres):
    @property
    def bin_dir(self) -> Path:
        return tls_bin_dir()


class _Settings(ServiceSettings):
    service_name = "tlstest"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(directory: Path, label: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(label)).issuer_name(_name(label))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"{label}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def enable_tls(pg: Postgres, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate) -> None:
    """ssl=on with a server certificate for 127.0.0.1/localhost, and TLS-only client authentication."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    data = pg.data_dir
    (data / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (data / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n")
    with open(data / "postgresql.conf", "a") as conf:
        conf.write("\nssl = on\n")
    owner = data.stat()
    for name in ("server.crt", "server.key", "pg_hba.conf"):
        os.chown(data / name, owner.st_uid, owner.st_gid)
        (data / name).chmod(0o600)


def start_tls_postgres(workdir: Path) -> tuple[TlsPostgres, Path, Path]:
    """A TLS-only server; (server, CA that signed it, a CA that did not)."""
    ca, ca_key, ca_cert = make_ca(workdir, "refnet-test-ca")
    other_ca, _, _ = make_ca(workdir, "other-ca")
    pg = TlsPostgres(workdir / "pgdata", free_port(), workdir / "postgres.log")
    pg.init()
    enable_tls(pg, ca_key, ca_cert)
    pg.start()
    return pg, ca, other_ca


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[tuple[Postgres, Path, Path]]:
    workdir = Path(tempfile.mkdtemp(prefix="refnet-tls-"))
    workdir.chmod(0o755)
    pg, ca, other_ca = start_tls_postgres(workdir)
    try:
        yield pg, ca, other_ca
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _wait_connectable(url: str) -> None:
    for _ in range(100):
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                return
        except OSError:
            await asyncio.sleep(0.1)
        finally:
            await engine.dispose()


async def _uses_tls(url: str) -> bool:
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return bool(await conn.scalar(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")))
    finally:
        await engine.dispose()


async def _relay_leads(url: str) -> bool:
    """Whether the outbox relay gets its own connection (and the leader's lock) with these settings."""
    led = asyncio.Event()

    def no_broker(*args: object, **kwargs: object) -> None:
        # The relay asks for its producer only once it holds the lock on its own connection. Only this relay's
        # call counts: another test's relay may be running in the same process.
        if args and args[0] == "127.0.0.1:1":
            led.set()
        raise ConnectionError("no broker in this test")

    engine = make_engine(url, pool_size=1)
    relay = OutboxRelay(service="tlstest", engine=engine, database_url=url, bootstrap="127.0.0.1:1")
    with mock.patch("shared.outbox.make_producer", no_broker):
        task = asyncio.create_task(relay.run())
        try:
            await asyncio.wait_for(led.wait(), 3)
            return True
        except TimeoutError:
            return False
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.dispose()


async def test_verify_full_for_the_pool_and_the_relay(tls_postgres: tuple[Postgres, Path, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pg, ca, _ = tls_postgres
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_URL", pg.url(driver="postgresql+asyncpg"))
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_SSLMODE", "verify-full")
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_SSLROOTCERT", str(ca))
    url = _Settings().database_url
    await _wait_connectable(url)
    assert await _uses_tls(url)
    assert await _relay_leads(url)


async def test_libpq_parameters_in_the_url_work_for_both_paths(tls_postgres: tuple[Postgres, Path, Path]) -> None:
    # As the operations guide documents them (the old code crashed the pool on sslmode=).
    pg, ca, _ = tls_postgres
    url = pg.url(driver="postgresql+asyncpg") + f"?sslmode=verify-full&sslrootcert={ca}"
    await _wait_connectable(url)
    assert await _uses_tls(url)
    assert await _relay_leads(url)


async def test_legacy_ssl_require_reaches_the_relay_too(tls_postgres: tuple[Postgres, Path, Path]) -> None:
    # The old relay sent ssl=require as a server setting and the server refused the login.
    pg, _, _ = tls_postgres
    url = pg.url(driver="postgresql+asyncpg") + "?ssl=require"
    await _wait_connectable(url)
    assert await _relay_leads(url)


async def test_a_server_the_ca_did_not_sign_is_refused(tls_postgres: tuple[Postgres, Path, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pg, ca, other_ca = tls_postgres
    await _wait_connectable(pg.url(driver="postgresql+asyncpg") + f"?sslmode=verify-full&sslrootcert={ca}")
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_URL", pg.url(driver="postgresql+asyncpg"))
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_SSLMODE", "verify-full")
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_SSLROOTCERT", str(other_ca))
    url = _Settings().database_url
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await _uses_tls(url)
    assert not await _relay_leads(url)


def test_database_url_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "url"
    secret.write_text("postgresql+asyncpg://svc:pw@db.internal:5432/refnet_svc\n")
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_URL_FILE", str(secret))
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_SSLMODE", "verify-full")
    assert _Settings().database_url == "postgresql+asyncpg://svc:pw@db.internal:5432/refnet_svc?sslmode=verify-full"
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_SSLROOTCERT", str(tmp_path / "missing.crt"))
    with pytest.raises(ValueError, match="sslrootcert"):
        _Settings()
    monkeypatch.setenv("REFNET_TLSTEST_DATABASE_SSLMODE", "prefer")  # falls back to plaintext: refused
    with pytest.raises(ValueError, match="sslmode"):
        _Settings()
