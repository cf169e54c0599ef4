"""monitoring: contacts, threshold overrides, alerts with their changes, the notification
outbox, flap state, maintenance windows, the stack's credentials

Revision ID: i9monitor
Revises: h8jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "i9monitor"
down_revision = "h8jobs"
branch_labels = None
depends_on = None

TABLES = (
    "monitor_notifications",
    "monitor_contacts",
    "monitor_alert_changes",
    "monitor_thresholds",
    "monitor_maintenance",
    "monitor_flaps",
    "monitor_credentials",
    "monitor_alerts",
)


def upgrade() -> None:
    op.create_table(
        "monitor_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("check", sa.String(length=40), nullable=False),
        sa.Column("level", sa.String(length=12), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("target", sa.String(length=140), nullable=False),
        sa.Column("series", sa.String(length=300), nullable=False),
        sa.Column("host", sa.String(length=40), nullable=True),
        sa.Column("region", sa.String(length=40), nullable=True),
        sa.Column("isv_id", sa.String(length=20), nullable=True),
        sa.Column("platform_id", sa.String(length=20), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("maintenance_id", sa.String(length=20), nullable=True),
        sa.Column("suppressed", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_alerts")),
        sa.UniqueConstraint("fingerprint", "starts_at", name=op.f("uq_monitor_alerts_fingerprint")),
    )
    op.create_index(
        "ix_monitor_alerts_host_time", "monitor_alerts", ["host", "started_at"], unique=False
    )
    op.create_index(
        "ix_monitor_alerts_isv_time", "monitor_alerts", ["isv_id", "started_at"], unique=False
    )
    op.create_index(
        "ix_monitor_alerts_open",
        "monitor_alerts",
        ["ended_at"],
        unique=False,
        postgresql_where="ended_at IS NULL",
    )
    op.create_index(
        "ix_monitor_alerts_platform_time",
        "monitor_alerts",
        ["platform_id", "started_at"],
        unique=False,
    )
    op.create_index(
        "ix_monitor_alerts_target_time", "monitor_alerts", ["target", "started_at"], unique=False
    )
    op.create_table(
        "monitor_credentials",
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_monitor_credentials")),
    )
    op.create_table(
        "monitor_flaps",
        sa.Column("series", sa.String(length=300), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("flapping_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_change_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("series", name=op.f("pk_monitor_flaps")),
    )
    op.create_table(
        "monitor_maintenance",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("silence_id", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_maintenance")),
    )
    op.create_index(
        op.f("ix_monitor_maintenance_ends_at"), "monitor_maintenance", ["ends_at"], unique=False
    )
    op.create_index(
        op.f("ix_monitor_maintenance_isv_id"), "monitor_maintenance", ["isv_id"], unique=False
    )
    op.create_index(
        op.f("ix_monitor_maintenance_starts_at"), "monitor_maintenance", ["starts_at"], unique=False
    )
    op.create_table(
        "monitor_thresholds",
        sa.Column("check", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=True),
        sa.Column("busy", sa.Double(), nullable=True),
        sa.Column("overloaded", sa.Double(), nullable=False),
        sa.Column("clear", sa.Double(), nullable=True),
        sa.Column("set_by", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("check", "scope", "target", name=op.f("pk_monitor_thresholds")),
    )
    op.create_index(
        op.f("ix_monitor_thresholds_isv_id"), "monitor_thresholds", ["isv_id"], unique=False
    )
    op.create_table(
        "monitor_alert_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["monitor_alerts.id"],
            name=op.f("fk_monitor_alert_changes_alert_id_monitor_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_alert_changes")),
    )
    op.create_index(
        op.f("ix_monitor_alert_changes_alert_id"),
        "monitor_alert_changes",
        ["alert_id"],
        unique=False,
    )
    op.create_table(
        "monitor_contacts",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("isv_id", sa.String(length=20), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("hours", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["isv_id"],
            ["isvs.id"],
            name=op.f("fk_monitor_contacts_isv_id_isvs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_contacts")),
        sa.UniqueConstraint("isv_id", "name", name=op.f("uq_monitor_contacts_isv_id")),
    )
    op.create_index(
        op.f("ix_monitor_contacts_isv_id"), "monitor_contacts", ["isv_id"], unique=False
    )
    op.create_table(
        "monitor_notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("maintenance_id", sa.String(length=20), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("contact_id", sa.String(length=20), nullable=True),
        sa.Column("group_key", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["monitor_alerts.id"],
            name=op.f("fk_monitor_notifications_alert_id_monitor_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_notifications")),
        sa.UniqueConstraint(
            "alert_id",
            "state",
            "recipient",
            "channel",
            name=op.f("uq_monitor_notifications_alert_id"),
        ),
        sa.UniqueConstraint(
            "maintenance_id",
            "state",
            "recipient",
            "channel",
            name=op.f("uq_monitor_notifications_maintenance_id"),
        ),
    )
    op.create_index(
        op.f("ix_monitor_notifications_alert_id"),
        "monitor_notifications",
        ["alert_id"],
        unique=False,
    )
    op.create_index(
        "ix_monitor_notifications_due",
        "monitor_notifications",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_monitor_notifications_maintenance_id"),
        "monitor_notifications",
        ["maintenance_id"],
        unique=False,
    )


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
