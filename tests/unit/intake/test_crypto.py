"""Envelope encryption: sealed data opens only with its case's data key, bound to its case and label."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from services.intake.crypto import (
    Keyring,
    KeyUnavailable,
    MasterKey,
    Undecryptable,
    new_data_key,
    open_sealed,
    seal,
    unwrap,
    wrap,
    write_key_file,
)


def test_seal_and_open_round_trip_bound_to_case_and_label() -> None:
    key = new_data_key()
    blob = seal(key, {"given_name": "Amina"}, case_id="case-1", label="case")
    assert b"Amina" not in blob
    assert open_sealed(key, blob, case_id="case-1", label="case") == {"given_name": "Amina"}
    with pytest.raises(Undecryptable):
        open_sealed(key, blob, case_id="case-2", label="case")
    with pytest.raises(Undecryptable):
        open_sealed(key, blob, case_id="case-1", label="consent:x")
    with pytest.raises(Undecryptable):
        open_sealed(new_data_key(), blob, case_id="case-1", label="case")


def test_wrapped_data_keys_open_only_with_their_master_key() -> None:
    master, other = MasterKey.generate(), MasterKey.generate()
    data_key = new_data_key()
    wrapped = wrap(data_key, master, "case-1")
    assert unwrap(wrapped, master, "case-1") == data_key
    with pytest.raises(Undecryptable):
        unwrap(wrapped, other, "case-1")
    with pytest.raises(Undecryptable):
        unwrap(wrapped, master, "case-2")
    ring = Keyring(other, (master,))
    assert ring.by_id(master.key_id) is master
    with pytest.raises(KeyUnavailable):
        Keyring(other).by_id(master.key_id)


def test_key_files(tmp_path: Path) -> None:
    key = MasterKey.generate()
    path = tmp_path / "k.b64"
    write_key_file(path, key)
    assert MasterKey.from_file(path) == key
    assert (path.stat().st_mode & 0o777) == 0o600
    assert key.encoded().decode() not in repr(key)
    (tmp_path / "short").write_text(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(KeyUnavailable):
        MasterKey.from_file(tmp_path / "short")
    with pytest.raises(KeyUnavailable):
        MasterKey.from_file(tmp_path / "missing")
