"""The DPO's workspace: staff sign-in safety, channels, pauses, legal holds, bulk batches.

Revision ID: 0005_dpo_workspace
Revises: 0004_decisions
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_dpo_workspace"
down_revision = "0004_decisions"
branch_labels = None
depends_on = None

_REQUEST_FKS = {
    "created_by_id": ("fk_data_subject_request_created_by_id_staff_user", "staff_user"),
    "batch_id": ("fk_data_subject_request_batch_id_erasure_batch", "erasure_batch"),
}
_RUN_HOLD_FK = "fk_system_run_hold_id_legal_hold"


def upgrade():
    with op.batch_alter_table("staff_user") as batch:
        batch.add_column(
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("locked_until", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("totp_secret_sealed", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("totp_enabled_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("last_login_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("staff_user") as batch:
        batch.alter_column("failed_logins", server_default=None)

    op.create_table(
        "erasure_batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("segment", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("approved_at", sa.DateTime(), nullable=True),
        sa.Column("approved_by_id", sa.Integer(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("summary_pdf", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["approved_by_id"], ["staff_user.id"]),
        sa.ForeignKeyConstraint(["created_by_id"], ["staff_user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_erasure_batch_reference", "erasure_batch", ["reference"], unique=True)

    op.create_table(
        "legal_hold",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=True),
        sa.Column("system", sa.String(length=64), nullable=True),
        sa.Column("ground", sa.String(length=40), nullable=False),
        sa.Column("reason_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.Column("released_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["created_by_id"], ["staff_user.id"]),
        sa.ForeignKeyConstraint(["identity_id"], ["subject_identity.id"]),
        sa.ForeignKeyConstraint(["released_by_id"], ["staff_user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_legal_hold_identity_id", "legal_hold", ["identity_id"])

    op.create_table(
        "request_pause",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("started_on", sa.Date(), nullable=False),
        sa.Column("ended_on", sa.Date(), nullable=True),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("started_by_id", sa.Integer(), nullable=True),
        sa.Column("ended_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["ended_by_id"], ["staff_user.id"]),
        sa.ForeignKeyConstraint(["request_id"], ["data_subject_request.id"]),
        sa.ForeignKeyConstraint(["started_by_id"], ["staff_user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_request_pause_request_id", "request_pause", ["request_id"])

    op.create_table(
        "job_mark",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("run_on", sa.Date(), nullable=False),
        sa.Column("ran_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", "run_on"),
    )

    with op.batch_alter_table("data_subject_request") as batch:
        batch.add_column(
            sa.Column("channel", sa.String(length=32), nullable=False, server_default="portal")
        )
        batch.add_column(sa.Column("created_by_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("identity_method", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("identity_note_sealed", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("subject_country", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("reason_code", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("batch_id", sa.Integer(), nullable=True))
        for column, (name, table) in _REQUEST_FKS.items():
            batch.create_foreign_key(name, table, [column], ["id"])
        batch.create_index("ix_data_subject_request_batch_id", ["batch_id"])
    with op.batch_alter_table("data_subject_request") as batch:
        batch.alter_column("channel", server_default=None)

    with op.batch_alter_table("system_run") as batch:
        batch.add_column(sa.Column("retained_ground", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("hold_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(_RUN_HOLD_FK, "legal_hold", ["hold_id"], ["id"])


def downgrade():
    with op.batch_alter_table("system_run") as batch:
        batch.drop_constraint(_RUN_HOLD_FK, type_="foreignkey")
        batch.drop_column("hold_id")
        batch.drop_column("retained_ground")
    with op.batch_alter_table("data_subject_request") as batch:
        batch.drop_index("ix_data_subject_request_batch_id")
        for name, _ in _REQUEST_FKS.values():
            batch.drop_constraint(name, type_="foreignkey")
        for column in (
            "batch_id",
            "reason_code",
            "subject_country",
            "identity_note_sealed",
            "identity_method",
            "created_by_id",
            "channel",
        ):
            batch.drop_column(column)
    op.drop_table("job_mark")
    op.drop_index("ix_request_pause_request_id", table_name="request_pause")
    op.drop_table("request_pause")
    op.drop_index("ix_legal_hold_identity_id", table_name="legal_hold")
    op.drop_table("legal_hold")
    op.drop_index("ix_erasure_batch_reference", table_name="erasure_batch")
    op.drop_table("erasure_batch")
    with op.batch_alter_table("staff_user") as batch:
        for column in (
            "last_login_at",
            "totp_enabled_at",
            "totp_secret_sealed",
            "locked_until",
            "failed_logins",
        ):
            batch.drop_column(column)
