"""billing: usage tokens and events, the platform ledger, plans, subscriptions, invoices

Revision ID: l12billing
Revises: k11schedules
"""

import sqlalchemy as sa
from alembic import op

revision = "l12billing"
down_revision = "k11schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_usage_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("platform_id", sa.String(length=20), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_billing_usage_tokens")),
    )
    op.create_index(op.f("ix_billing_usage_tokens_platform_id"), "billing_usage_tokens",
                    ["platform_id"], unique=False)
    op.create_table(
        "billing_usage_events",
        sa.Column("platform_id", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=False),
        sa.Column("tenant", sa.String(length=40), nullable=False),
        sa.Column("user_hash", sa.LargeBinary(length=16), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("platform_id", "event_id", name=op.f("pk_billing_usage_events")),
    )
    op.create_index("ix_billing_usage_isv_time", "billing_usage_events", ["isv_id", "time"],
                    unique=False, postgresql_include=["tenant", "user_hash", "platform_id"])
    op.create_index("ix_billing_usage_isv_received", "billing_usage_events",
                    ["isv_id", "received_at"], unique=False, postgresql_include=["time"])
    op.create_table(
        "billing_platforms",
        sa.Column("platform_id", sa.String(length=20), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=90), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("platform_id", name=op.f("pk_billing_platforms")),
    )
    op.create_index(op.f("ix_billing_platforms_isv_id"), "billing_platforms", ["isv_id"],
                    unique=False)
    op.create_table(
        "billing_plans",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_plans")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_billing_plans_name")),
    )
    op.create_table(
        "billing_subscriptions",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=False),
        sa.Column("plan_id", sa.String(length=20), nullable=False),
        sa.Column("term", sa.String(length=4), nullable=False),
        sa.Column("min_users", sa.Integer(), nullable=False),
        sa.Column("tax_rate", sa.String(length=20), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(["isv_id"], ["isvs.id"],
                                name=op.f("fk_billing_subscriptions_isv_id_isvs"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["plan_id"], ["billing_plans.id"],
                                name=op.f("fk_billing_subscriptions_plan_id_billing_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_subscriptions")),
    )
    op.create_index("ix_billing_subscriptions_isv_start", "billing_subscriptions",
                    ["isv_id", "start"], unique=False)
    op.create_table(
        "billing_invoices",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("subscription_id", sa.String(length=20), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("subtotal", sa.String(length=30), nullable=False),
        sa.Column("tax", sa.String(length=30), nullable=False),
        sa.Column("total", sa.String(length=30), nullable=False),
        sa.Column("tax_rate", sa.String(length=20), nullable=False),
        sa.Column("active_users", sa.Integer(), nullable=False),
        sa.Column("billed_users", sa.JSON(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["isv_id"], ["isvs.id"],
                                name=op.f("fk_billing_invoices_isv_id_isvs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["billing_subscriptions.id"],
            name=op.f("fk_billing_invoices_subscription_id_billing_subscriptions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_invoices")),
        sa.UniqueConstraint("isv_id", "period", name=op.f("uq_billing_invoices_isv_id")),
    )


def downgrade() -> None:
    op.drop_table("billing_invoices")
    op.drop_table("billing_subscriptions")
    op.drop_table("billing_plans")
    op.drop_index(op.f("ix_billing_platforms_isv_id"), table_name="billing_platforms")
    op.drop_table("billing_platforms")
    op.drop_table("billing_usage_events")
    op.drop_index(op.f("ix_billing_usage_tokens_platform_id"), table_name="billing_usage_tokens")
    op.drop_table("billing_usage_tokens")
