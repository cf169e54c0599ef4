"""access: MFA, lockout, forced password change, scoped tokens, platform service level

Revision ID: b2access
Revises: 64fff2f10272
"""

import sqlalchemy as sa
from alembic import op

revision = "b2access"
down_revision = "64fff2f10272"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("scope_role", sa.String(length=30), nullable=True))
    op.add_column("api_tokens", sa.Column("platform_id", sa.String(length=20), nullable=True))
    op.add_column("api_tokens", sa.Column("last_used_at", sa.DateTime(timezone=True)))
    op.create_foreign_key(op.f("fk_api_tokens_platform_id_platforms"), "api_tokens",
                          "platforms", ["platform_id"], ["id"], ondelete="CASCADE")
    op.add_column("platforms", sa.Column("service_level", sa.String(length=10),
                                         server_default="hands-off", nullable=False))
    op.add_column("users", sa.Column("must_change_password", sa.Boolean(),
                                     server_default=sa.false(), nullable=False))
    op.add_column("users", sa.Column("totp_secret", sa.Text(), nullable=True))
    op.add_column("users", sa.Column("totp_enabled", sa.Boolean(), server_default=sa.false(),
                                     nullable=False))
    op.add_column("users", sa.Column("recovery_codes", sa.JSON(), server_default="[]",
                                     nullable=False))
    op.add_column("users", sa.Column("failed_logins", sa.Integer(), server_default="0",
                                     nullable=False))
    op.add_column("users", sa.Column("locked_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    for column in ("locked_until", "failed_logins", "recovery_codes", "totp_enabled",
                   "totp_secret", "must_change_password"):
        op.drop_column("users", column)
    op.drop_column("platforms", "service_level")
    op.drop_constraint(op.f("fk_api_tokens_platform_id_platforms"), "api_tokens",
                       type_="foreignkey")
    for column in ("last_used_at", "platform_id", "scope_role"):
        op.drop_column("api_tokens", column)
