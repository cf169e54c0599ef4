"""support: grants of support access to hands-on platforms; the role a certificate was
issued under

Revision ID: f6support
Revises: e5keys
"""

import sqlalchemy as sa
from alembic import op

revision = "f6support"
down_revision = "e5keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "support_grants",
        sa.Column("id", sa.String(20), nullable=False),
        sa.Column("isv_id", sa.String(20), nullable=False),
        sa.Column("platform_id", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("granted_by", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(40), nullable=True),
        sa.ForeignKeyConstraint(["isv_id"], ["isvs.id"], name="fk_support_grants_isv_id_isvs",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["platform_id"], ["platforms.id"],
                                name="fk_support_grants_platform_id_platforms",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_support_grants"),
    )
    op.create_index("ix_support_grants_isv_id", "support_grants", ["isv_id"])
    op.create_index("ix_support_grants_platform_id", "support_grants", ["platform_id"])
    op.create_index("ix_support_grants_expires_at", "support_grants", ["expires_at"])
    op.add_column("ssh_certs", sa.Column("role", sa.String(30), nullable=True))


def downgrade() -> None:
    op.drop_column("ssh_certs", "role")
    op.drop_table("support_grants")
