"""job steps: when a step that waits on a host first gave its worker slot back

Revision ID: m13job_waits
Revises: l12billing
"""

import sqlalchemy as sa
from alembic import op

revision = "m13job_waits"
down_revision = "l12billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_steps", sa.Column("waiting_since", sa.DateTime(timezone=True),
                                         nullable=True))


def downgrade() -> None:
    op.drop_column("job_steps", "waiting_since")
