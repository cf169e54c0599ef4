"""keys: tables of tenantry.access.keys

Revision ID: e5keys
Revises: d4ssh
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "e5keys"
down_revision = "d4ssh"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
