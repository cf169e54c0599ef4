"""ssh: tables of tenantry.access.ssh

Revision ID: d4ssh
Revises: c3audit
"""

import sqlalchemy as sa
from alembic import op

revision = "d4ssh"
down_revision = "c3audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ssh_certs",
        sa.Column("serial", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=20), nullable=False),
        sa.Column("username", sa.String(length=40), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=True),
        sa.Column("host_id", sa.String(length=20), nullable=False),
        sa.Column("principals", sa.JSON(), nullable=False),
        sa.Column("extensions", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("valid_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"],
                                name=op.f("fk_ssh_certs_host_id_hosts"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_ssh_certs_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_ssh_certs")),
    )
    for column in ("user_id", "isv_id", "host_id", "valid_before"):
        op.create_index(op.f(f"ix_ssh_certs_{column}"), "ssh_certs", [column])


def downgrade() -> None:
    for column in ("valid_before", "host_id", "isv_id", "user_id"):
        op.drop_index(op.f(f"ix_ssh_certs_{column}"), table_name="ssh_certs")
    op.drop_table("ssh_certs")
