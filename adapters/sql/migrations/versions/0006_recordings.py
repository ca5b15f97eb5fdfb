"""Call recordings: `calls.recorded` (both participants agreed and recording was on) and one
`recordings` row per participant's media (recording, then ready with its file, or failed).

Written out by hand, like 0001; it must run on SQLite and PostgreSQL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "calls",
        sa.Column("recorded", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "recordings",
        sa.Column("recording_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("room_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("user_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("node_id", sa.String(63), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("blob_key", sa.String(255), nullable=True),
        sa.Column("container", sa.String(12), nullable=True),
        sa.Column("video_codec", sa.String(12), nullable=True),
        sa.Column("audio_codec", sa.String(12), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("recording_id", name=op.f("pk_recordings")),
        sa.ForeignKeyConstraint(["room_id"], ["calls.room_id"],
                                name=op.f("fk_recordings_room_id_calls"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"],
                                name=op.f("fk_recordings_user_id_users"), ondelete="CASCADE"),
        sa.CheckConstraint("status IN ('recording', 'ready', 'failed')",
                           name=op.f("ck_recordings_status")),
    )
    op.create_index(op.f("ix_recordings_room_id"), "recordings", ["room_id"])
    op.create_index(op.f("ix_recordings_node_id_status"), "recordings", ["node_id", "status"])


def downgrade() -> None:
    op.drop_table("recordings")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("recorded")
