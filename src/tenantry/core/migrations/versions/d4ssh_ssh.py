"""ssh: tables of tenantry.access.ssh

Revision ID: d4ssh
Revises: c3audit
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "d4ssh"
down_revision = "c3audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
