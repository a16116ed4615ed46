"""Startup refuses what would make the log unverifiable or the role switch unsafe."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import create_async_engine

from services.audit.app import act_as_writer, create_app, load_signer
from services.audit.settings import AuditSettings
from services.audit.signing import generate_key_file, load_key_file, raw_public


def test_the_configured_key_signs(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_key_file(path)
    signer = load_signer(AuditSettings(checkpoint_key_file=str(path), checkpoint_origin="example.org/log"))
    assert signer.public_key == raw_public(load_key_file(path).public_key())
    assert signer.origin == "example.org/log"
    with pytest.raises(FileExistsError):
        generate_key_file(path)  # never overwrite a signing key


def test_a_missing_or_wrong_key_file_stops_startup(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        create_app(AuditSettings(checkpoint_key_file=str(tmp_path / "absent.pem")))
    wrong = tmp_path / "ec.pem"
    wrong.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ValueError, match="Ed25519"):
        create_app(AuditSettings(checkpoint_key_file=str(wrong)))


def test_without_a_key_file_a_throwaway_key_is_used() -> None:
    assert len(load_signer(AuditSettings(checkpoint_key_file="")).public_key) == 32


@pytest.mark.parametrize("role", ['x"; DROP TABLE audit_entries; --', "Writer", "a b", ""])
def test_only_plain_role_names_are_switched_to(role: str) -> None:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    with pytest.raises(ValueError, match="writer_role"):
        act_as_writer(engine, role)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFNET_AUDIT_CHECKPOINT_KEY_FILE", "/keys/a.pem")
    monkeypatch.setenv("REFNET_AUDIT_WRITER_ROLE", "")
    settings = AuditSettings()
    assert settings.checkpoint_key_file == "/keys/a.pem" and settings.writer_role == ""
    assert settings.port == 8004
