"""Moved to :mod:`microexp.sweep.storage`.

This alias keeps ``from microexp.engine.sweep_storage import ...`` working for one release.
"""

from microexp.sweep.storage import (
    GRACE_PERIOD, HEARTBEAT_INTERVAL, JOURNAL_PREFIX, MAX_RETRY, default_storage_url, driver_missing_hint,
    journal_path, open_storage, redact_url, sqlite_path,
)

__all__ = [
    "GRACE_PERIOD", "HEARTBEAT_INTERVAL", "JOURNAL_PREFIX", "MAX_RETRY", "default_storage_url",
    "driver_missing_hint", "journal_path", "open_storage", "redact_url", "sqlite_path",
]
