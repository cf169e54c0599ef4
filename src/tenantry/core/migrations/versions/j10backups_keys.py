"""backups: the ISV's escrowed backup passphrases (pgBackRest and restic) on its row,
encrypted with its data key; disaster-recovery drills with their measured RPO and RTO

Revision ID: j10backups
Revises: i9monitor
"""

import sqlalchemy as sa
from alembic import op

revision = "j10backups"
down_revision = "i9monitor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("isvs", sa.Column("backup_key", sa.Text(), nullable=True))
    op.add_column("isvs", sa.Column("files_key", sa.Text(), nullable=True))
    op.create_table(
        "backup_drills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("platform_id", sa.String(length=20), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("host", sa.String(length=40), nullable=False),
        sa.Column("same_host", sa.Boolean(), nullable=False),
        sa.Column("result", sa.String(length=10), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked_commits", sa.Integer(), nullable=True),
        sa.Column("lost_commits", sa.Integer(), nullable=True),
        sa.Column("rpo_seconds", sa.Float(), nullable=True),
        sa.Column("rto_seconds", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["isv_id"], ["isvs.id"],
                                name=op.f("fk_backup_drills_isv_id_isvs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["platform_id"], ["platforms.id"],
                                name=op.f("fk_backup_drills_platform_id_platforms"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_drills")),
        sa.UniqueConstraint("job_id", name=op.f("uq_backup_drills_job_id")),
    )
    op.create_index(op.f("ix_backup_drills_isv_id"), "backup_drills", ["isv_id"])
    op.create_index("ix_backup_drills_platform_started", "backup_drills",
                    ["platform_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_backup_drills_platform_started", table_name="backup_drills")
    op.drop_index(op.f("ix_backup_drills_isv_id"), table_name="backup_drills")
    op.drop_table("backup_drills")
    op.drop_column("isvs", "files_key")
    op.drop_column("isvs", "backup_key")
