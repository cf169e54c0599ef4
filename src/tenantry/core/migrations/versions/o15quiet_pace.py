"""hosts: the pace of quiet heartbeats each host was last given

Revision ID: o15quiet_pace
Revises: n14desired_at
"""

import sqlalchemy as sa
from alembic import op

revision = "o15quiet_pace"
down_revision = "n14desired_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL until the host's next heartbeat: the offline check takes the fleet's pace then
    op.add_column("hosts", sa.Column("quiet_pace", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("hosts", "quiet_pace")
