"""The restore rehearsal of docs/operations.md ("Backup and restore"), with the embedded PostgreSQL: WAL
archived by ``archive_command``, a base backup (``pg_basebackup``), and a point-in-time recovery into a
new data directory that stops before a later change. wal-g (compose) and CloudNativePG (Kubernetes) do
the same with object storage in place of the archive folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from deploy.launcher.infra import POSTGRES_BIN_PATH, Postgres, _open_path_for, free_port
from tests.conftest import psql


def _own(path: Path, pg: Postgres) -> None:
    """Files the server must read or write belong to the user it runs as (refnet_pg when we are root)."""
    ids = pg._run_as()
    if ids is None:
        return
    os.chown(path, *ids)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), *ids)


def _server(pg: Postgres) -> str:
    return pg.url().rsplit("/", 1)[0]


def _wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_base_backup_and_archived_wal_restore_to_a_point_in_time(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    source = Postgres(tmp_path / "source", free_port(), tmp_path / "source.log")
    source.init()
    with open(source.data_dir / "postgresql.conf", "a") as conf:
        conf.write(f"\nwal_level = replica\narchive_mode = on\narchive_timeout = 60\n"
                   f"archive_command = 'test ! -f {archive}/%f && cp %p {archive}/%f'\n")
    _own(archive, source)
    _open_path_for(archive)
    restored: Postgres | None = None
    source.start()
    try:
        server = _server(source)
        psql(server, "CREATE DATABASE rehearsal")
        psql(server, "CREATE TABLE cases (id text PRIMARY KEY, data_key text); "
                     "INSERT INTO cases VALUES ('before-backup', 'k1')", "rehearsal")

        base = tmp_path / "base"
        subprocess.run([str(POSTGRES_BIN_PATH / "pg_basebackup"), "-d", f"{server}/postgres", "-D", str(base),
                        "-c", "fast", "-X", "none"], check=True, capture_output=True)

        psql(server, "INSERT INTO cases VALUES ('after-backup', 'k2')", "rehearsal")
        target = psql(server, "SELECT clock_timestamp()").strip()
        time.sleep(1.1)
        # After the restore point: an erasure (the data key destroyed) and a new case.
        psql(server, "UPDATE cases SET data_key = NULL WHERE id = 'before-backup'; "
                     "INSERT INTO cases VALUES ('after-target', 'k3')", "rehearsal")
        last = psql(server, "SELECT pg_walfile_name(pg_current_wal_lsn())").strip()
        psql(server, "SELECT pg_switch_wal()")
        _wait_until(lambda: (archive / last).exists())
    finally:
        source.stop()
    shutil.rmtree(source.data_dir)  # the disaster: the server's data directory is gone

    try:
        data = tmp_path / "restored"
        shutil.copytree(base, data)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\narchive_mode = off\nrestore_command = 'cp {archive}/%f %p'\n"
                       f"recovery_target_time = '{target}'\nrecovery_target_action = 'promote'\n")
        (data / "recovery.signal").touch()
        restored = Postgres(data, free_port(), tmp_path / "restored.log")
        _own(data, restored)
        data.chmod(0o700)
        restored.start()
        server = _server(restored)
        _wait_until(lambda: psql(server, "SELECT pg_is_in_recovery()").strip() == "f")
        rows = psql(server, "SELECT id, coalesce(data_key, '-') FROM cases ORDER BY id", "rehearsal")
        # Everything up to the target, nothing after: the erasure after the target is undone by the restore,
        # which is why `refnet intake reapply-erasures` follows a restore of intake.
        assert rows.split() == ["after-backup|k2", "before-backup|k1"]
        log = (tmp_path / "restored.log").read_text()
        assert "recovery stopping before commit" in log and "archive recovery complete" in log
    finally:
        if restored is not None:
            restored.stop()
