"""desired: platforms.runtime is renamed platforms.desired (it holds the desired state; see
platforms.contract.DesiredState, which reads the existing documents as they are)

Revision ID: g7desired
Revises: f6support
"""

from alembic import op

revision = "g7desired"
down_revision = "f6support"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("platforms", "runtime", new_column_name="desired")


def downgrade() -> None:
    op.alter_column("platforms", "desired", new_column_name="runtime")
