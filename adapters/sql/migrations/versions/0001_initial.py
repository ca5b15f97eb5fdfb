"""The initial schema: users, sessions, chat history, cooldowns, invites, reports, bans,
referral notifications.

Written out by hand so that it never changes when adapters/sql/schema.py does; it must run on
SQLite and PostgreSQL. Types: UUIDs are sa.Uuid (native on PostgreSQL, CHAR(32) on SQLite),
JSON is JSONB on PostgreSQL, timestamps are `timestamp with time zone` (stored as UTC).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _uuid() -> sa.Uuid[str]:
    return sa.Uuid(as_uuid=False)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _user_fk(column: str, table: str, ondelete: str | None = None) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        ["users.user_id"],
        name=op.f(f"fk_{table}_{column}_users"),
        ondelete=ondelete,
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", _uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("gender", sa.String(20), nullable=False),
        sa.Column("account_type", sa.String(20), nullable=False),
        sa.Column("email", sa.String(255), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("selfie_url", sa.Text(), nullable=True),
        sa.Column("video_url", sa.Text(), nullable=True),
        sa.Column("socials", _json(), nullable=False),
        sa.Column("timer_total_seconds", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("session_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_sessions", _json(), nullable=False),
        sa.Column("referral_code", sa.String(50), nullable=True),
        sa.Column("referred_by", _uuid(), nullable=True),
        sa.Column("introduced_to", _uuid(), nullable=True),
        sa.Column("introduced_by", _uuid(), nullable=True),
        sa.Column("paid_status", sa.String(20), nullable=False, server_default="unpaid"),
        sa.Column("paid_at", _ts(), nullable=True),
        sa.Column("invite_code_used", sa.String(20), nullable=True),
        sa.Column("my_invite_code", sa.String(20), nullable=True),
        sa.Column("invite_code_uses_remaining", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("ban_status", sa.String(20), nullable=False, server_default="none"),
        sa.Column("banned_at", _ts(), nullable=True),
        sa.Column("banned_reason", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.CheckConstraint(
            "gender IN ('female', 'male', 'nonbinary', 'unspecified')",
            name=op.f("ck_users_gender"),
        ),
        sa.CheckConstraint(
            "account_type IN ('guest', 'permanent')", name=op.f("ck_users_account_type")
        ),
        _user_fk("referred_by", "users"),
        _user_fk("introduced_to", "users"),
        _user_fk("introduced_by", "users"),
    )
    op.create_index(op.f("ix_users_paid_status"), "users", ["paid_status"])
    op.create_index(op.f("ix_users_ban_status"), "users", ["ban_status"])
    op.create_index(op.f("ix_users_created_at"), "users", ["created_at"])

    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", _uuid(), nullable=False),
        sa.Column("ip_address", sa.String(45), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_sessions")),
        _user_fk("user_id", "sessions", ondelete="CASCADE"),
    )
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"])
    op.create_index(op.f("ix_sessions_expires_at"), "sessions", ["expires_at"])

    op.create_table(
        "chat_history",
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("user_id", _uuid(), nullable=False),
        sa.Column("partner_id", _uuid(), nullable=False),
        sa.Column("partner_name", sa.String(255), nullable=True),
        sa.Column("room_id", _uuid(), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("duration", sa.Integer(), nullable=False),
        sa.Column("messages", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_chat_history")),
        _user_fk("user_id", "chat_history"),
        _user_fk("partner_id", "chat_history"),
    )
    op.create_index(op.f("ix_chat_history_user_id"), "chat_history", ["user_id"])
    op.create_index(op.f("ix_chat_history_partner_id"), "chat_history", ["partner_id"])
    op.create_index(op.f("ix_chat_history_started_at"), "chat_history", ["started_at"])

    op.create_table(
        "cooldowns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id_1", _uuid(), nullable=False),
        sa.Column("user_id_2", _uuid(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cooldowns")),
        sa.UniqueConstraint(
            "user_id_1", "user_id_2", name=op.f("uq_cooldowns_user_id_1_user_id_2")
        ),
        sa.CheckConstraint("user_id_1 < user_id_2", name=op.f("ck_cooldowns_user_order")),
        _user_fk("user_id_1", "cooldowns", ondelete="CASCADE"),
        _user_fk("user_id_2", "cooldowns", ondelete="CASCADE"),
    )
    op.create_index(op.f("ix_cooldowns_expires_at"), "cooldowns", ["expires_at"])
    op.create_index(op.f("ix_cooldowns_user_id_2"), "cooldowns", ["user_id_2"])

    op.create_table(
        "invite_codes",
        sa.Column("code", sa.String(20), nullable=False),
        sa.Column("created_by", _uuid(), nullable=True),
        sa.Column("created_by_name", sa.String(255), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses_remaining", sa.Integer(), nullable=False),
        sa.Column("used_by", _json(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_invite_codes")),
        sa.CheckConstraint("type IN ('user', 'admin')", name=op.f("ck_invite_codes_type")),
        sa.CheckConstraint("uses_remaining >= 0", name=op.f("ck_invite_codes_uses_remaining")),
        _user_fk("created_by", "invite_codes"),
    )
    op.create_index(op.f("ix_invite_codes_created_by"), "invite_codes", ["created_by"])
    op.create_index(op.f("ix_invite_codes_type"), "invite_codes", ["type"])
    op.create_index(op.f("ix_invite_codes_is_active"), "invite_codes", ["is_active"])

    op.create_table(
        "reports",
        sa.Column("report_id", _uuid(), nullable=False),
        sa.Column("reported_user_id", _uuid(), nullable=False),
        sa.Column("reporter_user_id", _uuid(), nullable=False),
        sa.Column("reporter_ip", sa.String(45), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("room_id", _uuid(), nullable=True),
        sa.Column("reported_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_reports")),
        _user_fk("reported_user_id", "reports"),
        _user_fk("reporter_user_id", "reports"),
    )
    op.create_index(op.f("ix_reports_reported_user_id"), "reports", ["reported_user_id"])
    op.create_index(op.f("ix_reports_reported_at"), "reports", ["reported_at"])

    op.create_table(
        "ban_records",
        sa.Column("user_id", _uuid(), nullable=False),
        sa.Column("ban_status", sa.String(20), nullable=False),
        sa.Column("banned_at", _ts(), nullable=False),
        sa.Column("banned_reason", sa.Text(), nullable=False),
        sa.Column("report_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("review_status", sa.String(30), nullable=True),
        sa.Column("reviewed_at", _ts(), nullable=True),
        sa.Column("reviewed_by", _uuid(), nullable=True),
        sa.Column("ip_addresses", _json(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_ban_records")),
        _user_fk("user_id", "ban_records", ondelete="CASCADE"),
        _user_fk("reviewed_by", "ban_records"),
    )
    op.create_index(op.f("ix_ban_records_ban_status"), "ban_records", ["ban_status"])
    op.create_index(op.f("ix_ban_records_review_status"), "ban_records", ["review_status"])

    op.create_table(
        "referral_notifications",
        sa.Column("id", _uuid(), nullable=False),
        sa.Column("for_user_id", _uuid(), nullable=False),
        sa.Column("referred_user_id", _uuid(), nullable=False),
        sa.Column("referred_name", sa.String(255), nullable=True),
        sa.Column("introduced_by", _uuid(), nullable=False),
        sa.Column("introduced_by_name", sa.String(255), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("read", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_notifications")),
        _user_fk("for_user_id", "referral_notifications"),
        _user_fk("referred_user_id", "referral_notifications"),
        _user_fk("introduced_by", "referral_notifications"),
    )
    op.create_index(
        op.f("ix_referral_notifications_for_user_id"), "referral_notifications", ["for_user_id"]
    )
    op.create_index(op.f("ix_referral_notifications_read"), "referral_notifications", ["read"])
    op.create_index(
        op.f("ix_referral_notifications_created_at"), "referral_notifications", ["created_at"]
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; drop the referencing tables before users.
    for table in (
        "referral_notifications",
        "ban_records",
        "reports",
        "invite_codes",
        "cooldowns",
        "chat_history",
        "sessions",
        "users",
    ):
        op.drop_table(table)
