"""audit: tables of tenantry.access.audit

Revision ID: c3audit
Revises: b2access
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "c3audit"
down_revision = "b2access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
