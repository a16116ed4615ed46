#!/bin/sh
# Runs its arguments with the repository's passphrase from the secret file in pgBackRest's environment
# variable: compose cannot put a secret file into an environment variable, and a passphrase in
# pgbackrest.conf would be in the image.
set -eu
PGBACKREST_REPO1_CIPHER_PASS="$(cat /run/secrets/pgbackrest_cipher_pass)"
export PGBACKREST_REPO1_CIPHER_PASS
exec "$@"
