"""platforms: the host generation at which each platform's desired state last changed

Revision ID: n14desired_at
Revises: m13job_waits
"""

import sqlalchemy as sa
from alembic import op

revision = "n14desired_at"
down_revision = "m13job_waits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("platforms", sa.Column("desired_at", sa.Integer(), nullable=True))
    # What a platform's host holds now is its state: an agent that holds its host's current
    # generation has every platform as it is (without a stamp, each would be sent with
    # every change on its host until its next change)
    op.execute("UPDATE platforms AS p SET desired_at = h.generation FROM hosts AS h"
               " WHERE p.host_id = h.id")


def downgrade() -> None:
    op.drop_column("platforms", "desired_at")
