"""Customer number, reason and feedback on requests; export packages.

Revision ID: 0003_request_types_exports
Revises: 0002_verification_reminders
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_request_types_exports"
down_revision = "0002_verification_reminders"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("data_subject_request") as batch:
        batch.add_column(sa.Column("customer_number_sealed", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("reason_sealed", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("feedback_score", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("feedback_sealed", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("feedback_at", sa.DateTime(), nullable=True))
    op.create_table(
        "export_package",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("downloads", sa.Integer(), nullable=False),
        sa.Column("max_downloads", sa.Integer(), nullable=False),
        sa.Column("purged_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["data_subject_request.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("filename"),
    )
    op.create_index("ix_export_package_request_id", "export_package", ["request_id"])
    op.create_index("ix_export_package_expires_at", "export_package", ["expires_at"])


def downgrade():
    op.drop_index("ix_export_package_expires_at", table_name="export_package")
    op.drop_index("ix_export_package_request_id", table_name="export_package")
    op.drop_table("export_package")
    with op.batch_alter_table("data_subject_request") as batch:
        for column in (
            "feedback_at",
            "feedback_sealed",
            "feedback_score",
            "reason_sealed",
            "customer_number_sealed",
        ):
            batch.drop_column(column)
