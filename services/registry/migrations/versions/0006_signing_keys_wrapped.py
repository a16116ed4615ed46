"""The signing keys' private parts leave the database in clear: each is wrapped (AES-256-GCM) under the
key-encryption key in ``REFNET_REGISTRY_KEK_FILE``, which is held outside the database; keys already retired
lose their private part, and ``retired_at`` starts the grace period of the previous key.

Existing keys are wrapped here, so with keys in the table this needs the KEK (it refuses to run without
it, saying how to provide it). The downgrade needs it too, to put the private parts back in clear.

Revision ID: registry_0006
"""

import sqlalchemy as sa
from alembic import op

from services.registry.keyvault import unwrap_private_pem, wrap_private_pem
from services.registry.settings import KEK_SETTING, RegistrySettings
from shared.kek import KeyRing, KeyUnavailable

revision = "registry_0006"
down_revision = "registry_0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
HOW = (f"set {KEK_SETTING} to a file holding base64 of 32 random bytes (`openssl rand -base64 32 > "
       "registry_kek.b64`, deploy/secrets/README.md: Compose mounts deploy/secrets/registry_kek.b64, "
       "Kubernetes the Secret refnet-registry-kek) and keep that file apart from the database's backups; "
       "for a local stack made before this migration: `openssl rand -base64 32 > .refnet/keys/registry_kek.b64`"
       f" and `export {KEK_SETTING}=$PWD/.refnet/keys/registry_kek.b64`, then `make run` again")


def _ring(purpose: str) -> KeyRing:
    try:
        return RegistrySettings().kek_ring()
    except KeyUnavailable as exc:
        raise RuntimeError(f"registry_0006 {purpose} the signing keys' private parts and needs the "
                           f"key-encryption key: {exc}. To provide it, {HOW}.") from None


def upgrade() -> None:
    op.add_column("signing_keys", sa.Column("private_key_wrapped", sa.LargeBinary))
    op.add_column("signing_keys", sa.Column("kek_id", sa.String(32)))
    op.add_column("signing_keys", sa.Column("retired_at", TS))
    bind = op.get_bind()
    # Retired keys sign nothing and are published nowhere: their private parts are not kept at all.
    bind.execute(sa.text("UPDATE signing_keys SET retired_at = now() WHERE status IN ('previous', 'retired')"))
    kept = bind.execute(sa.text(
        "SELECT kid, private_pem FROM signing_keys WHERE status <> 'retired' ORDER BY kid")).all()
    if kept:
        kek = _ring("wraps").current
        for kid, pem in kept:
            bind.execute(sa.text("UPDATE signing_keys SET private_key_wrapped = :w, kek_id = :k WHERE kid = :kid"),
                         {"w": wrap_private_pem(pem, kid, kek), "k": kek.key_id, "kid": kid})
    op.drop_column("signing_keys", "private_pem")
    op.create_check_constraint("private_key_kek", "signing_keys", "(private_key_wrapped IS NULL) = (kek_id IS NULL)")
    op.create_check_constraint("signing_key_has_private_part", "signing_keys",
                               "status NOT IN ('next', 'current') OR private_key_wrapped IS NOT NULL")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_signing_keys_signing_key_has_private_part"), "signing_keys", type_="check")
    op.drop_constraint(op.f("ck_signing_keys_private_key_kek"), "signing_keys", type_="check")
    op.add_column("signing_keys", sa.Column("private_pem", sa.Text))
    bind = op.get_bind()
    # Keys whose private part was destroyed cannot come back; the old schema has no place for them.
    bind.execute(sa.text("DELETE FROM signing_keys WHERE private_key_wrapped IS NULL"))
    rows = bind.execute(sa.text("SELECT kid, private_key_wrapped, kek_id FROM signing_keys ORDER BY kid")).all()
    if rows:
        ring = _ring("unwraps")
        for kid, wrapped, kek_id in rows:
            bind.execute(sa.text("UPDATE signing_keys SET private_pem = :p WHERE kid = :kid"),
                         {"p": unwrap_private_pem(bytes(wrapped), kek_id, kid, ring), "kid": kid})
    op.alter_column("signing_keys", "private_pem", nullable=False)
    op.drop_column("signing_keys", "retired_at")
    op.drop_column("signing_keys", "kek_id")
    op.drop_column("signing_keys", "private_key_wrapped")
