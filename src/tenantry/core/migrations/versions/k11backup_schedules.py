"""backups: a platform's own backup schedule where it differs from the defaults

Revision ID: k11schedules
Revises: j10backups
"""

import sqlalchemy as sa
from alembic import op

revision = "k11schedules"
down_revision = "j10backups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_schedules",
        sa.Column("platform_id", sa.String(length=20), nullable=False),
        sa.Column("full", sa.Integer(), nullable=True),
        sa.Column("diff", sa.Integer(), nullable=True),
        sa.Column("incr", sa.Integer(), nullable=True),
        sa.Column("verify", sa.Integer(), nullable=True),
        sa.Column("restore_test", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(["platform_id"], ["platforms.id"],
                                name=op.f("fk_backup_schedules_platform_id_platforms"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("platform_id", name=op.f("pk_backup_schedules")),
    )


def downgrade() -> None:
    op.drop_table("backup_schedules")
