"""Refusal with a legal ground, and the one extension of the deadline, on requests.

Revision ID: 0004_decisions
Revises: 0003_request_types_exports
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_decisions"
down_revision = "0003_request_types_exports"
branch_labels = None
depends_on = None

_DECIDED_BY_FK = "fk_data_subject_request_decided_by_id_staff_user"


def upgrade():
    with op.batch_alter_table("data_subject_request") as batch:
        batch.add_column(sa.Column("decision_reason", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("decision_note_sealed", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("decided_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("decided_by_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("extended_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("extension_reason", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("extension_note_sealed", sa.LargeBinary(), nullable=True))
        batch.create_foreign_key(_DECIDED_BY_FK, "staff_user", ["decided_by_id"], ["id"])


def downgrade():
    with op.batch_alter_table("data_subject_request") as batch:
        batch.drop_constraint(_DECIDED_BY_FK, type_="foreignkey")
        for column in (
            "extension_note_sealed",
            "extension_reason",
            "extended_at",
            "decided_by_id",
            "decided_at",
            "decision_note_sealed",
            "decision_reason",
        ):
            batch.drop_column(column)
