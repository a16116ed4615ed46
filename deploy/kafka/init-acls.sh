#!/bin/bash
# Broker users and least-privilege ACLs for docker-compose.yml (job kafka-acls-init), run as the super user
# `admin` over the BROKER listener. Idempotent: re-running sets the same passwords and ACLs.
# The same ACLs as deploy/k8s/kafka-users.yaml (tests/static/test_broker_access.py holds both to one table).
# An agency's user: `refnet agency broker-user <agency> --compose` prints its commands.
set -euo pipefail

BOOTSTRAP="${KAFKA_ADMIN_BOOTSTRAP:-kafka-1:9094}"
ADMIN=/run/secrets/kafka_admin.properties
BIN=/opt/kafka/bin

user() {  # user <name> <password file>: a SCRAM-SHA-512 credential (the password never on a command line
  # another container could see: it goes through a temporary properties file readable by this job only).
  local name="$1" file="$2" tmp
  tmp="$(mktemp)"
  printf 'SCRAM-SHA-512=[password=%s]\n' "$(cat "$file")" > "$tmp"
  "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN" --alter \
    --entity-type users --entity-name "$name" --add-config-file "$tmp"
  rm -f "$tmp"
}

acl() {  # acl <user> <literal|prefixed> <topic|group> <name> <operation>...
  local principal="User:$1" pattern="$2" kind="$3" name="$4"
  shift 4
  local ops=()
  for op in "$@"; do ops+=(--operation "$op"); done
  "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN" --add --force \
    --allow-principal "$principal" "${ops[@]}" "--$kind" "$name" --resource-pattern-type "$pattern"
}

user refnet-registry /run/secrets/kafka_registry_password
user refnet-intake /run/secrets/kafka_intake_password
user refnet-referral /run/secrets/kafka_referral_password
user refnet-audit /run/secrets/kafka_audit_password
user refnet-topics /run/secrets/kafka_topics_password

# One line per grant, no loops: tests/static/test_broker_access.py reads these lines.
# topics-init (`refnet topics ensure`): creates the four event topics and their dead-letter topics.
acl refnet-topics literal topic refnet.registry.events Create Describe
acl refnet-topics literal topic refnet.registry.events.dlq Create Describe
acl refnet-topics literal topic refnet.intake.events Create Describe
acl refnet-topics literal topic refnet.intake.events.dlq Create Describe
acl refnet-topics literal topic refnet.referral.events Create Describe
acl refnet-topics literal topic refnet.referral.events.dlq Create Describe
acl refnet-topics literal topic refnet.audit.access Create Describe
acl refnet-topics literal topic refnet.audit.access.dlq Create Describe

# registry: publishes its events; reads them back (revocations, reconciliation).
acl refnet-registry literal topic refnet.registry.events Write Read Describe

# intake: publishes its events; reads referral and registry events (groups intake-*), dead-letters them.
acl refnet-intake literal topic refnet.intake.events Write Read Describe
acl refnet-intake literal topic refnet.referral.events Read Describe
acl refnet-intake literal topic refnet.registry.events Read Describe
acl refnet-intake literal topic refnet.referral.events.dlq Write Describe
acl refnet-intake literal topic refnet.registry.events.dlq Write Describe
acl refnet-intake prefixed group intake- Read

# referral: publishes its events and the per-agency delivery topics -- the only user that may create them.
acl refnet-referral literal topic refnet.referral.events Write Read Describe
acl refnet-referral prefixed topic refnet.delivery. Create Write Read Describe
acl refnet-referral literal topic refnet.registry.events Read Describe
acl refnet-referral literal topic refnet.intake.events Read Describe
acl refnet-referral literal topic refnet.registry.events.dlq Write Describe
acl refnet-referral literal topic refnet.intake.events.dlq Write Describe
acl refnet-referral prefixed group referral- Read

# audit: publishes access records; reads every event topic (group refnet-audit), dead-letters them.
acl refnet-audit literal topic refnet.audit.access Write Read Describe
acl refnet-audit literal topic refnet.registry.events Read Describe
acl refnet-audit literal topic refnet.intake.events Read Describe
acl refnet-audit literal topic refnet.referral.events Read Describe
acl refnet-audit literal topic refnet.registry.events.dlq Write Describe
acl refnet-audit literal topic refnet.intake.events.dlq Write Describe
acl refnet-audit literal topic refnet.referral.events.dlq Write Describe
acl refnet-audit literal topic refnet.audit.access.dlq Write Describe
acl refnet-audit literal group refnet-audit Read
echo "broker users and ACLs in place"
