"""platforms: since when what the agent reports has been wrong (the hold before degraded)

Revision ID: q17unwell_since
Revises: p16platforms_host
"""

import sqlalchemy as sa
from alembic import op

revision = "q17unwell_since"
down_revision = "p16platforms_host"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: well, or not judged since the upgrade (the next wrong report starts the hold)
    op.add_column("platforms", sa.Column("unwell_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("platforms", "unwell_since")
