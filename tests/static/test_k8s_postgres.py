"""deploy/k8s/postgres.yaml, checked offline: PostgreSQL on CloudNativePG with HA, WAL archiving, scheduled
backups and TLS only, and the same databases and roles as deploy/postgres/init."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import pytest

from ._cnpg import CLUSTER_SCHEMA, SCHEDULED_BACKUP_SCHEMA
from ._support import OPERATIONS_DOC, POSTGRES_INIT_DIR, k8s_by_kind

CLUSTER = k8s_by_kind("Cluster")["refnet-postgres"]
SPEC = CLUSTER["spec"]


def test_three_instances_on_different_nodes_with_a_synchronous_replica() -> None:
    assert SPEC["instances"] >= 3
    assert SPEC["affinity"]["podAntiAffinityType"] == "required"
    assert SPEC["minSyncReplicas"] >= 1


def test_wal_is_archived_and_backups_are_scheduled_for_the_documented_window() -> None:
    store = SPEC["backup"]["barmanObjectStore"]
    assert store["wal"]["encryption"] and store["data"]["encryption"]
    assert int(SPEC["postgresql"]["parameters"]["archive_timeout"].removesuffix("min")) <= 5
    window = SPEC["backup"]["retentionPolicy"]
    assert window == "30d"
    assert "**30-day window**" in OPERATIONS_DOC.read_text()
    scheduled = [b for b in k8s_by_kind("ScheduledBackup").values()
                 if b["spec"]["cluster"]["name"] == "refnet-postgres"]
    assert scheduled, "no ScheduledBackup for the cluster"
    for backup in scheduled:
        jsonschema.validate(backup, SCHEDULED_BACKUP_SCHEMA)
        day, month, weekday = backup["spec"]["schedule"].split()[3:]
        assert (day, month, weekday) == ("*", "*", "*"), "base backups must be daily"
        assert backup["spec"]["method"] == "barmanObjectStore"


def test_connections_without_tls_are_refused() -> None:
    hba = SPEC["postgresql"]["pg_hba"]
    rejects = [r for r in hba if r.split()[0] == "hostnossl" and r.split()[-1] == "reject"]
    assert {r.split()[3] for r in rejects} == {"0.0.0.0/0", "::/0"}
    # Before anything that accepts: pg_hba.conf takes the first matching line.
    first_accept = min(i for i, r in enumerate(hba) if r.split()[-1] != "reject")
    assert all(hba.index(r) < first_accept for r in rejects)
    assert SPEC["postgresql"]["parameters"]["ssl_min_protocol_version"] == "TLSv1.3"
    assert SPEC["enableSuperuserAccess"] is False


def test_pods_carry_the_labels_the_network_policies_select() -> None:
    policy = k8s_by_kind("NetworkPolicy")["refnet-postgres-ingress"]
    wanted = policy["spec"]["podSelector"]["matchLabels"]
    assert wanted.items() <= SPEC["inheritedMetadata"]["labels"].items()


def _init_script_layout() -> tuple[dict[str, str], set[str]]:
    """-> ({database: owner}, roles) as the compose init script creates them."""
    text = "\n".join(p.read_text() for p in POSTGRES_INIT_DIR.glob("*.sh"))
    databases = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+);", text))
    roles = set(re.findall(r"CREATE ROLE (\w+) LOGIN", text))
    return databases, roles


def test_databases_and_roles_are_those_of_the_init_script() -> None:
    databases, roles = _init_script_layout()
    assert len(databases) == 4 and len(roles) == 5
    initdb = SPEC["bootstrap"]["initdb"]
    sql = initdb["postInitSQL"]
    made = dict(re.findall(r"^CREATE DATABASE (\w+) OWNER (\w+)$", "\n".join(sql), re.M))
    made[initdb["database"]] = initdb["owner"]
    assert made == databases
    for database in databases:
        if database != initdb["database"]:
            assert f"REVOKE ALL ON DATABASE {database} FROM PUBLIC" in sql, database
    managed = {r["name"]: r for r in SPEC["managed"]["roles"]}
    assert set(managed) == roles
    assert all(r["login"] and r["passwordSecret"]["name"] for r in managed.values())
    # The audit writer: INSERT and SELECT only, on the tables the owner's migrations create.
    app_sql = " ".join(initdb["postInitApplicationSQL"])
    assert "GRANT SELECT, INSERT ON TABLES TO refnet_audit_writer" in " ".join(app_sql.split())
    assert "REVOKE ALL ON DATABASE refnet_audit FROM PUBLIC" in app_sql
    assert not re.search(r"UPDATE|DELETE|TRUNCATE", app_sql)


@pytest.mark.parametrize("breakage", ["typo", "no-backup", "bad-retention"])
def test_cluster_schema_rejects_breakage(breakage: str) -> None:
    doc: dict[str, Any] = copy.deepcopy(CLUSTER)
    jsonschema.validate(doc, CLUSTER_SCHEMA)
    if breakage == "typo":
        doc["spec"]["backup"]["barmanObjectStore"]["wal"]["compresion"] = "gzip"
    elif breakage == "no-backup":
        del doc["spec"]["backup"]
    else:
        doc["spec"]["backup"]["retentionPolicy"] = "30 days"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, CLUSTER_SCHEMA)
