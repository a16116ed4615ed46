"""Schemas of our own for the CloudNativePG kinds deploy/k8s/postgres.yaml uses (CRDs: kubernetes-validate
has no schema for them). They follow the postgresql.cnpg.io/v1 API; only the fields RefNet uses are
allowed at the levels listed, so a typo in a field name is an error instead of a silently ignored setting."""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_SECRET_KEY = {"type": "object", "required": ["name", "key"], "additionalProperties": False,
               "properties": {"name": _NAME, "key": {"type": "string"}}}


def _closed(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


def _string_list() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}}


CLUSTER_SCHEMA: dict[str, Any] = _closed(
    ["apiVersion", "kind", "metadata", "spec"],
    apiVersion={"const": "postgresql.cnpg.io/v1"},
    kind={"const": "Cluster"},
    metadata=_METADATA,
    spec=_closed(
        ["instances", "storage", "backup"],
        instances={"type": "integer", "minimum": 1},
        imageName={"type": "string"},
        inheritedMetadata=_closed([], labels={"type": "object", "additionalProperties": {"type": "string"}},
                                  annotations={"type": "object"}),
        primaryUpdateStrategy={"enum": ["unsupervised", "supervised"]},
        minSyncReplicas={"type": "integer", "minimum": 0},
        maxSyncReplicas={"type": "integer", "minimum": 0},
        affinity=_closed([], enablePodAntiAffinity={"type": "boolean"},
                         podAntiAffinityType={"enum": ["preferred", "required"]},
                         topologyKey={"type": "string"}),
        storage=_closed(["size"], size={"type": "string"}, storageClass={"type": "string"}),
        walStorage=_closed(["size"], size={"type": "string"}, storageClass={"type": "string"}),
        resources={"type": "object"},
        postgresql=_closed([], parameters={"type": "object", "additionalProperties": {"type": "string"}},
                           pg_hba=_string_list()),
        enableSuperuserAccess={"type": "boolean"},
        certificates={"type": "object"},
        bootstrap=_closed([], initdb=_closed(
            ["database", "owner"], database={"type": "string"}, owner={"type": "string"},
            encoding={"type": "string"}, localeCollate={"type": "string"}, localeCType={"type": "string"},
            dataChecksums={"type": "boolean"}, postInitSQL=_string_list(),
            postInitApplicationSQL=_string_list(), postInitTemplateSQL=_string_list())),
        managed=_closed([], roles={"type": "array", "items": _closed(
            ["name"], name={"type": "string"}, ensure={"enum": ["present", "absent"]},
            login={"type": "boolean"}, passwordSecret=_closed(["name"], name=_NAME),
            inRoles=_string_list())}),
        backup=_closed(
            ["barmanObjectStore", "retentionPolicy"],
            retentionPolicy={"type": "string", "pattern": r"^[1-9][0-9]*[dwm]$"},
            target={"enum": ["primary", "prefer-standby"]},
            barmanObjectStore=_closed(
                ["destinationPath", "wal"],
                destinationPath={"type": "string", "pattern": r"^(s3|gs|https)://"},
                endpointURL={"type": "string"},
                s3Credentials=_closed(["accessKeyId", "secretAccessKey"], accessKeyId=_SECRET_KEY,
                                      secretAccessKey=_SECRET_KEY, region=_SECRET_KEY),
                wal=_closed([], compression={"enum": ["gzip", "bzip2", "snappy", "lz4", "xz", "zstd"]},
                            encryption={"enum": ["AES256", "aws:kms"]},
                            maxParallel={"type": "integer", "minimum": 1}),
                data=_closed([], compression={"enum": ["gzip", "bzip2", "snappy", "lz4", "xz", "zstd"]},
                             encryption={"enum": ["AES256", "aws:kms"]}, jobs={"type": "integer", "minimum": 1}),
            ),
        ),
    ),
)

SCHEDULED_BACKUP_SCHEMA: dict[str, Any] = _closed(
    ["apiVersion", "kind", "metadata", "spec"],
    apiVersion={"const": "postgresql.cnpg.io/v1"},
    kind={"const": "ScheduledBackup"},
    metadata=_METADATA,
    spec=_closed(
        ["schedule", "cluster"],
        # Six fields: CloudNativePG's schedules start with seconds.
        schedule={"type": "string", "pattern": r"^\S+( \S+){5}$"},
        backupOwnerReference={"enum": ["none", "self", "cluster"]},
        immediate={"type": "boolean"},
        method={"enum": ["barmanObjectStore", "volumeSnapshot", "plugin"]},
        cluster=_closed(["name"], name=_NAME),
    ),
)

CNPG_SCHEMAS = {"Cluster": CLUSTER_SCHEMA, "ScheduledBackup": SCHEDULED_BACKUP_SCHEMA}
