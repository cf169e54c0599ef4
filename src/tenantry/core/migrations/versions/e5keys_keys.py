"""keys: tables of tenantry.access.keys

Revision ID: e5keys
Revises: d4ssh
"""

import sqlalchemy as sa
from alembic import op

revision = "e5keys"
down_revision = "d4ssh"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("id", sa.String(24), nullable=False),
        sa.Column("org", sa.String(20), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.Column("master_key_id", sa.String(24), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_data_keys"),
        sa.UniqueConstraint("org", name="uq_data_keys_org"),
    )
    op.create_table(
        "site_certificates",
        sa.Column("id", sa.String(20), nullable=False),
        sa.Column("isv_id", sa.String(20), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expiry_notified_on", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["isv_id"], ["isvs.id"], ondelete="CASCADE",
                                name="fk_site_certificates_isv_id_isvs"),
        sa.PrimaryKeyConstraint("id", name="pk_site_certificates"),
        sa.UniqueConstraint("isv_id", "domain", name="uq_site_certificates_isv_id"),
    )
    op.create_index("ix_site_certificates_isv_id", "site_certificates", ["isv_id"])
    op.create_index("ix_site_certificates_not_after", "site_certificates", ["not_after"])


def downgrade() -> None:
    op.drop_table("site_certificates")
    op.drop_table("data_keys")
