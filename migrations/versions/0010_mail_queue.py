"""The mail queue: every outgoing email, sealed, until it is sent.

Revision ID: 0010_mail_queue
Revises: 0009_api_keys
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_mail_queue"
down_revision = "0009_api_keys"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "mail_queue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("body_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uid"),
    )
    op.create_index("ix_mail_queue_next_attempt_at", "mail_queue", ["next_attempt_at"])


def downgrade():
    op.drop_index("ix_mail_queue_next_attempt_at", table_name="mail_queue")
    op.drop_table("mail_queue")
