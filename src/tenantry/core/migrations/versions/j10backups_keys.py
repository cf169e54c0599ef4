"""isvs: the ISV's escrowed backup passphrases (pgBackRest and restic), encrypted with its
data key

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


def downgrade() -> None:
    op.drop_column("isvs", "files_key")
    op.drop_column("isvs", "backup_key")
