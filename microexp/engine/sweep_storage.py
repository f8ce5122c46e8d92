"""Where a sweep's Optuna studies live: an RDB URL (SQLite, PostgreSQL, MySQL) or a journal file.

* ``sqlite:///DIR/study.db`` (the default) -- one machine, several processes; a lock timeout of 60 s
  lets concurrent workers wait instead of failing with ``database is locked``.
* ``postgresql://user:password@host:port/db`` (any SQLAlchemy URL Optuna accepts) -- several machines.
* ``journal:///path/to/file.log`` (or ``journal://relative/path.log``) -- Optuna's append-only journal
  file (``JournalStorage`` + ``JournalFileBackend``), for one machine or a shared file system with
  working file locks.

RDB storages run a heartbeat: a trial whose worker died (killed, machine lost) is marked FAIL after
``grace_period`` seconds by the next worker that starts a trial, and re-enqueued with the same parameters
(``RetryHeartbeatStaleTrialCallback``, at most twice). The journal storage has no heartbeat; ``--fail-running``
marks RUNNING trials FAIL when you know no worker is alive.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from microexp.errors import ConfigError

__all__ = ["HEARTBEAT_INTERVAL", "JOURNAL_PREFIX", "default_storage_url", "open_storage", "redact_url"]

JOURNAL_PREFIX = "journal://"
HEARTBEAT_INTERVAL = 60
GRACE_PERIOD = 180
MAX_RETRY = 2
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def default_storage_url(out_dir: str | Path) -> str:
    """``sqlite:///<out_dir>/study.db`` with an absolute path."""
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def open_storage(url: str, *, heartbeat: bool = True) -> Any:
    """An Optuna storage object for ``url``.

    Args:
        url: an SQLAlchemy database URL, or ``journal://PATH`` for a journal file.
        heartbeat: run RDB heartbeats (stale trials of dead workers are failed and retried).

    Returns:
        ``optuna.storages.RDBStorage`` or ``optuna.storages.JournalStorage``.
    """
    import optuna

    if url.startswith(JOURNAL_PREFIX):
        path = Path(journal_path(url))
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if ":" not in url or scheme not in _RDB_SCHEMES:
        raise ConfigError(f"--storage {redact_url(url)!r}: expected an RDB URL (sqlite:///PATH, postgresql://user@host/db, ...) "
                          "or journal:///PATH")
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        db = url.split(":///", 1)[1] if ":///" in url else ""
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat API
            kwargs: dict[str, Any] = {}
            if heartbeat:
                kwargs = {"heartbeat_interval": HEARTBEAT_INTERVAL, "grace_period": GRACE_PERIOD,
                          "heartbeat_stale_trial_callback":
                              optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)}
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as exc:  # e.g. psycopg2 missing for postgresql://
        raise ConfigError(f"--storage {redact_url(url)!r}: database driver missing ({_scrub(str(exc), url)}); "
                          "e.g. pip install psycopg2-binary") from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError and friends: server down, bad credentials
        first = _scrub(" ".join(str(exc).split()), url)[:300]  # e.g. a URL parse error quotes the URL
        raise ConfigError(f"--storage {redact_url(url)!r}: cannot open ({type(exc).__name__}: {first})") from None


def journal_path(url: str) -> str:
    """The file path of a ``journal://`` URL (``journal:///abs/x.log`` -> ``/abs/x.log``)."""
    path = url[len(JOURNAL_PREFIX):]
    if not path or path == "/":
        raise ConfigError(f"--storage {url!r}: expected journal:///path/to/file.log")
    return path


def redact_url(url: str) -> str:
    """Hide a password in ``scheme://user:password@host`` (use it wherever a URL reaches a message or log)."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.rsplit("@", 1)[0]:
        credentials, host = tail.rsplit("@", 1)
        return f"{head}{sep}{credentials.split(':', 1)[0]}:***@{host}"
    return url


def _password(url: str) -> str:
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.rsplit("@", 1)[0]:
        return tail.rsplit("@", 1)[0].split(":", 1)[1]
    return ""


def _scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with ``url`` redacted and its password (raw or %-decoded) hidden."""
    from urllib.parse import unquote

    text = text.replace(url, redact_url(url))
    password = _password(url)
    for secret in {password, unquote(password)} - {""}:
        text = text.replace(secret, "***")
    return text
