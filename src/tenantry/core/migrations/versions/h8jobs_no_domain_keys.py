"""jobs: no foreign keys to domain tables (core's tables reference nothing above core); a
job keeps the id of the platform it worked on, even after that platform is destroyed

Revision ID: h8jobs
Revises: g7desired
"""

from alembic import op

revision = "h8jobs"
down_revision = "g7desired"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("fk_jobs_isv_id_isvs", "jobs", type_="foreignkey")
    op.drop_constraint("fk_jobs_platform_id_platforms", "jobs", type_="foreignkey")


def downgrade() -> None:
    op.execute("UPDATE jobs SET platform_id = NULL "
               "WHERE platform_id NOT IN (SELECT id FROM platforms)")
    op.create_foreign_key("fk_jobs_platform_id_platforms", "jobs", "platforms",
                          ["platform_id"], ["id"], ondelete="SET NULL")
    op.create_foreign_key("fk_jobs_isv_id_isvs", "jobs", "isvs", ["isv_id"], ["id"],
                          ondelete="CASCADE")
