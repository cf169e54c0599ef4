"""platforms: an index on the host, which every document of a host reads its platforms by

Revision ID: p16platforms_host
Revises: o15quiet_pace
"""

from alembic import op

revision = "p16platforms_host"
down_revision = "o15quiet_pace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_platforms_host_id"), "platforms", ["host_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_platforms_host_id"), table_name="platforms")
