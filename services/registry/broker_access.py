"""An agency's broker access: one user that may read only its own delivery topic (``refnet.delivery.<agency>``).

aiokafka has no Admin API for SCRAM credentials or ACLs (AlterUserScramCredentials, CreateAcls), so the
registry does not provision them itself: the operator applies what ``refnet agency broker-user <agency>``
prints -- a Strimzi ``KafkaUser`` (Kubernetes; the User Operator creates the password in a Secret of the same
name) or the Kafka CLI commands (compose) -- and hands the credentials to the agency once, like its client
secret. The embedded stack's broker has no ACLs; there the case system connects without credentials.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from shared.ids import is_refnet_id
from shared.topics import delivery_topic

DELIVERY_GROUP_PREFIX = "case-system-"


@dataclass(frozen=True)
class Acl:
    resource_type: str  # topic | group
    name: str
    pattern: str  # literal | prefix
    operations: tuple[str, ...]


def broker_user(agency_id: str) -> str:
    """The agency's broker principal; also a valid Kubernetes name (the KafkaUser's and its Secret's)."""
    return "agency-" + agency_id.replace("_", "-")


def agency_acls(agency_id: str) -> list[Acl]:
    """Read (and Describe) its delivery topic, literally -- never a prefix, which would match another agency
    whose id starts with this one's -- and use its own consumer group (literal too)."""
    if not is_refnet_id(agency_id, "agency"):
        raise ValueError("not an agency id")
    return [
        Acl("topic", delivery_topic(agency_id), "literal", ("Read", "Describe")),
        Acl("group", f"{DELIVERY_GROUP_PREFIX}{agency_id}", "literal", ("Read",)),
    ]


def kafka_user_manifest(agency_id: str, *, namespace: str = "refnet", cluster: str = "refnet-kafka") -> str:
    """The Strimzi KafkaUser (SCRAM-SHA-512) for the agency, as YAML (JSON is YAML)."""
    acls = [{"resource": {"type": r.resource_type, "name": r.name, "patternType": r.pattern},
             "operations": list(r.operations)} for r in agency_acls(agency_id)]
    user = {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": {"name": broker_user(agency_id), "namespace": namespace,
                     "labels": {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "refnet",
                                "refnet.org/agency": agency_id}},
        "spec": {"authentication": {"type": "scram-sha-512"},
                 "authorization": {"type": "simple", "acls": acls}},
    }
    return json.dumps(user, indent=2)


def kafka_cli_commands(agency_id: str, *, bootstrap: str = "kafka-1:9092",
                       admin_config: str = "/etc/kafka-admin/admin.properties") -> list[str]:
    """The same for compose: the Kafka CLI tools, run as the admin user (the password is asked for via
    ``$PASSWORD``, never put on this output)."""
    user = broker_user(agency_id)
    base = f"--bootstrap-server {bootstrap} --command-config {admin_config}"
    lines = [f"/opt/kafka/bin/kafka-configs.sh {base} --alter --entity-type users --entity-name {shlex.quote(user)} "
             "--add-config \"SCRAM-SHA-512=[password=$PASSWORD]\""]
    for acl in agency_acls(agency_id):
        ops = " ".join(f"--operation {op}" for op in acl.operations)
        lines.append(f"/opt/kafka/bin/kafka-acls.sh {base} --add --allow-principal User:{user} {ops} "
                     f"--{acl.resource_type} {shlex.quote(acl.name)} --resource-pattern-type {acl.pattern}")
    return lines
