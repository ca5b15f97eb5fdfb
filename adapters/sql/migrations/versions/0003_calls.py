"""Calls: the durable record of each call and its chat messages.

Written out by hand, like 0001; it must run on SQLite and PostgreSQL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _uuid() -> sa.Uuid[str]:
    return sa.Uuid(as_uuid=False)


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _user_fk(column: str, table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["users.user_id"], name=op.f(f"fk_{table}_{column}_users")
    )


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("room_id", _uuid(), nullable=False),
        sa.Column("caller_id", _uuid(), nullable=False),
        sa.Column("callee_id", _uuid(), nullable=False),
        sa.Column("node_id", sa.String(63), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("ends_at", _ts(), nullable=False),
        sa.Column("ended_at", _ts(), nullable=True),
        sa.Column("end_reason", sa.String(20), nullable=True),
        sa.PrimaryKeyConstraint("room_id", name=op.f("pk_calls")),
        sa.CheckConstraint(
            "end_reason IN ('completed', 'left', 'disconnected', 'failed', 'node_lost',"
            " 'cancelled')",
            name=op.f("ck_calls_end_reason"),
        ),
        sa.CheckConstraint(
            "(ended_at IS NULL) = (end_reason IS NULL)", name=op.f("ck_calls_ended")
        ),
        sa.CheckConstraint("caller_id <> callee_id", name=op.f("ck_calls_two_users")),
        sa.CheckConstraint("ends_at > started_at", name=op.f("ck_calls_times")),
        _user_fk("caller_id", "calls"),
        _user_fk("callee_id", "calls"),
    )
    op.create_index(op.f("ix_calls_caller_id"), "calls", ["caller_id"])
    op.create_index(op.f("ix_calls_callee_id"), "calls", ["callee_id"])
    op.create_index(op.f("ix_calls_ended_at_ends_at"), "calls", ["ended_at", "ends_at"])

    op.create_table(
        "call_messages",
        sa.Column("message_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("room_id", _uuid(), nullable=False),
        sa.Column("sender_id", _uuid(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sent_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_call_messages")),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["calls.room_id"],
            name=op.f("fk_call_messages_room_id_calls"),
            ondelete="CASCADE",
        ),
        _user_fk("sender_id", "call_messages"),
    )
    op.create_index(
        op.f("ix_call_messages_room_id_message_id"), "call_messages", ["room_id", "message_id"]
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; the messages refer to the calls.
    op.drop_table("call_messages")
    op.drop_table("calls")
