"""Intro videos: one row per upload and its transcode job (queued, running with progress and a
worker heartbeat, done, failed, superseded by a newer upload).

Written out by hand, like 0001; it must run on SQLite and PostgreSQL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intro_videos",
        sa.Column("job_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("user_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("progress", sa.Integer(), server_default="0", nullable=False),
        sa.Column("source_key", sa.String(255), nullable=False),
        sa.Column("video_key", sa.String(255), nullable=True),
        sa.Column("poster_key", sa.String(255), nullable=True),
        sa.Column("error", sa.String(255), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("worker", sa.String(63), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_intro_videos")),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"],
                                name=op.f("fk_intro_videos_user_id_users"), ondelete="CASCADE"),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'superseded')",
                           name=op.f("ck_intro_videos_status")),
        sa.CheckConstraint("progress BETWEEN 0 AND 100", name=op.f("ck_intro_videos_progress")),
    )
    op.create_index(op.f("ix_intro_videos_status_created_at"), "intro_videos",
                    ["status", "created_at"])
    op.create_index(op.f("ix_intro_videos_user_id_created_at"), "intro_videos",
                    ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_table("intro_videos")
