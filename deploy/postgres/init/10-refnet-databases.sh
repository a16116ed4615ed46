#!/usr/bin/env bash
# Creates one database and one login role per RefNet service. The official postgres image runs it once,
# on an empty data directory (files in /docker-entrypoint-initdb.d/ run in name order, as the postgres
# user, against a temporary server that listens on its Unix socket only).
#
#   database          role                      may
#   refnet_registry   refnet_registry           own the database (runs migrations and serves)
#   refnet_intake     refnet_intake             own the database
#   refnet_referral   refnet_referral           own the database
#   refnet_audit      refnet_audit_owner        own the database: runs the audit migrations, nothing else
#                     refnet_audit_writer       the audit service at run time: CONNECT, USAGE on the
#                                               schema, and INSERT and SELECT on the tables the owner
#                                               creates -- no UPDATE, DELETE or TRUNCATE, so the running
#                                               service cannot rewrite or cut the log.
#
# Nobody else may connect to a service's database (CONNECT and TEMP are revoked from PUBLIC).
# The writer's grants come from ALTER DEFAULT PRIVILEGES, so they cover tables that the owner's
# migrations create later. Sequences get no grant: the audit tables use identity columns (or indexes
# the sequencer assigns), which need no sequence privilege. A table the service must UPDATE needs an
# explicit GRANT in the migration that creates it, with its reason written next to it.
#
# Passwords come from secret files (compose `secrets:`, see deploy/secrets/README.md). psql reads them
# itself, so they never appear on a command line. Against any other PostgreSQL (managed, or run by an
# operator), run this same script as a superuser with PGHOST/PGPORT/PGUSER set and REFNET_DB_SECRETS_DIR
# naming a folder that holds the five password files.
set -Eeuo pipefail

export REFNET_DB_SECRETS_DIR="${REFNET_DB_SECRETS_DIR:-/run/secrets}"
for name in db_registry_password db_intake_password db_referral_password \
            db_audit_owner_password db_audit_writer_password; do
    if [[ ! -s "${REFNET_DB_SECRETS_DIR}/${name}" ]]; then
        echo "refnet init: missing or empty secret ${REFNET_DB_SECRETS_DIR}/${name}" >&2
        exit 1
    fi
done

psql --no-psqlrc --set ON_ERROR_STOP=1 --username "${POSTGRES_USER:-${PGUSER:-postgres}}" \
     --dbname postgres <<'SQL'
-- Backquotes run `cat` in psql itself (its trailing newline is dropped); :'name' quotes the value as a
-- string literal. The server stores only the SCRAM-SHA-256 verifier.
\set registry_pw `cat "$REFNET_DB_SECRETS_DIR/db_registry_password"`
\set intake_pw `cat "$REFNET_DB_SECRETS_DIR/db_intake_password"`
\set referral_pw `cat "$REFNET_DB_SECRETS_DIR/db_referral_password"`
\set audit_owner_pw `cat "$REFNET_DB_SECRETS_DIR/db_audit_owner_password"`
\set audit_writer_pw `cat "$REFNET_DB_SECRETS_DIR/db_audit_writer_password"`

SET password_encryption = 'scram-sha-256';

-- registry
CREATE ROLE refnet_registry LOGIN PASSWORD :'registry_pw';
CREATE DATABASE refnet_registry OWNER refnet_registry;
REVOKE ALL ON DATABASE refnet_registry FROM PUBLIC;

-- intake
CREATE ROLE refnet_intake LOGIN PASSWORD :'intake_pw';
CREATE DATABASE refnet_intake OWNER refnet_intake;
REVOKE ALL ON DATABASE refnet_intake FROM PUBLIC;

-- referral
CREATE ROLE refnet_referral LOGIN PASSWORD :'referral_pw';
CREATE DATABASE refnet_referral OWNER refnet_referral;
REVOKE ALL ON DATABASE refnet_referral FROM PUBLIC;

-- audit: an owner that migrates, a writer that appends and reads
CREATE ROLE refnet_audit_owner LOGIN PASSWORD :'audit_owner_pw';
CREATE ROLE refnet_audit_writer LOGIN PASSWORD :'audit_writer_pw';
CREATE DATABASE refnet_audit OWNER refnet_audit_owner;
REVOKE ALL ON DATABASE refnet_audit FROM PUBLIC;
GRANT CONNECT ON DATABASE refnet_audit TO refnet_audit_writer;

\unset registry_pw
\unset intake_pw
\unset referral_pw
\unset audit_owner_pw
\unset audit_writer_pw

\connect refnet_audit
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO refnet_audit_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE refnet_audit_owner IN SCHEMA public
    GRANT SELECT, INSERT ON TABLES TO refnet_audit_writer;
SQL

echo "refnet init: databases and roles created"
