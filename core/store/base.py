"""What every store module and every step share: the errors a user can act on, and the store's clock."""

from __future__ import annotations

from datetime import datetime, timezone


class WorkspaceError(Exception):
    """A workspace problem a user can act on; the CLI prints it without a traceback."""


class WorkspaceLocked(WorkspaceError):
    """Another process holds the database read-write (DuckDB's single-writer rule)."""


def now() -> datetime:
    """UTC, naive: DuckDB's TIMESTAMP (TIMESTAMPTZ would need pytz just to read it back)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
