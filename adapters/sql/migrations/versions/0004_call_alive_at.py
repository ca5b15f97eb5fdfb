"""Calls: `alive_at`, the last time the node hosting a call's media vouched that it was up.

A call cut short by its node (a crash, a restart) is recorded as ending then, not at its
scheduled end. Written out by hand, like 0001; it must run on SQLite and PostgreSQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("alive_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("alive_at")
