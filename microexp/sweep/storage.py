"""Where a sweep's Optuna studies live: an RDB URL (SQLite, PostgreSQL, MySQL) or a journal file.

* ``sqlite:///DIR/study.db`` (the default) -- one machine, several processes; a lock timeout of 60 s
  lets concurrent workers wait instead of failing with ``database is locked``.
* ``postgresql+psycopg2://user:password@host:port/db`` (any SQLAlchemy URL Optuna accepts) -- several
  machines. SQLAlchemy 2.x opens a bare ``postgresql://`` with psycopg 3 (``pip install 'psycopg[binary]'``);
  ``postgresql+psycopg2://`` uses psycopg2 (``pip install psycopg2-binary``, in the ``test`` extra). A missing
  driver is reported with the dialect and driver that were tried and both fixes.
* ``journal:///path/to/file.log`` (or ``journal://relative/path.log``) -- Optuna's append-only journal
  file (``JournalStorage`` + ``JournalFileBackend``), for one machine or a shared file system with
  working file locks.

RDB storages run a heartbeat: a trial whose worker died (killed, machine lost) is marked FAIL after
``grace_period`` seconds by the next worker that starts a trial, and re-enqueued with the same parameters
(``RetryHeartbeatStaleTrialCallback``, at most twice). The journal storage has no heartbeat; ``--fail-running``
marks RUNNING trials FAIL when you know no worker is alive.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from microexp.errors import ConfigError

__all__ = ["HEARTBEAT_INTERVAL", "JOURNAL_PREFIX", "default_storage_url", "driver_missing_hint", "open_storage",
           "redact_url", "sqlite_path"]

JOURNAL_PREFIX = "journal://"
HEARTBEAT_INTERVAL = 60
GRACE_PERIOD = 180
MAX_RETRY = 2
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def default_storage_url(out_dir: str | Path) -> str:
    """``sqlite:///<out_dir>/study.db`` with an absolute path."""
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def open_storage(url: str, *, heartbeat: bool = True, create_folder: bool = False) -> Any:
    """An Optuna storage object for ``url``.

    Args:
        url: an SQLAlchemy database URL, or ``journal://PATH`` for a journal file.
        heartbeat: run RDB heartbeats (stale trials of dead workers are failed and retried).
        create_folder: create the folder of an SQLite or journal file when it is missing (the default
            storage, inside the sweep's ``--out``); otherwise a missing folder is refused, so that a typo in
            ``--storage`` never creates folders silently.

    Returns:
        ``optuna.storages.RDBStorage`` or ``optuna.storages.JournalStorage``.

    Raises:
        ConfigError: not a storage URL, a missing folder, a missing database driver (naming the dialect and
            driver SQLAlchemy tried and how to fix it), or a database that cannot be opened; passwords are
            never shown.
    """
    import optuna

    if url.startswith(JOURNAL_PREFIX):
        path = Path(journal_path(url))
        _check_folder(path, url, create=create_folder)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if ":" not in url or scheme not in _RDB_SCHEMES:
        raise ConfigError(f"--storage {redact_url(url)!r}: expected an RDB URL (sqlite:///PATH, "
                          "postgresql+psycopg2://user@host/db, ...) or journal:///PATH")
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        db = sqlite_path(url)
        if db is not None:
            _check_folder(Path(db), url, create=create_folder)
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
    except ImportError as exc:  # the dialect's driver is not installed (Optuna wraps SQLAlchemy's ImportError)
        cause = exc.__cause__ or exc.__context__ or exc
        raise ConfigError(f"--storage {redact_url(url)!r}: {driver_missing_hint(url, cause)}") from exc
    except Exception as exc:  # sqlalchemy.exc.OperationalError and friends: server down, bad credentials
        first = _scrub(" ".join(str(exc).split()), url)[:300]  # e.g. a URL parse error quotes the URL
        raise ConfigError(f"--storage {redact_url(url)!r}: cannot open ({type(exc).__name__}: {first})") from None


#: SQLAlchemy driver name -> (importable module, what to pip install)
_DRIVERS = {
    "psycopg": ("psycopg", "'psycopg[binary]'"),
    "psycopg2": ("psycopg2", "psycopg2-binary"),
    "pg8000": ("pg8000", "pg8000"),
    "mysqldb": ("MySQLdb", "mysqlclient"),
    "pymysql": ("pymysql", "PyMySQL"),
    "mysqlconnector": ("mysql.connector", "mysql-connector-python"),
    "oracledb": ("oracledb", "oracledb"),
    "cx_oracle": ("cx_Oracle", "cx_Oracle"),
    "pyodbc": ("pyodbc", "pyodbc"),
}
#: backend -> drivers that may be written explicitly (``backend+driver://``), preferred first
_ALTERNATIVES = {
    "postgresql": ("psycopg2", "psycopg", "pg8000"),
    "mysql": ("pymysql", "mysqldb", "mysqlconnector"),
    "mariadb": ("pymysql", "mysqldb", "mysqlconnector"),
}


def driver_missing_hint(url: str, cause: BaseException) -> str:
    """Which dialect/driver SQLAlchemy tried for ``url`` and both fixes: install it, or name an installed one.

    SQLAlchemy 2.x opens ``postgresql://`` with psycopg (version 3), not psycopg2; ``postgresql+psycopg2://``
    selects psycopg2.
    """
    import importlib.util

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    written = url.split(":", 1)[0]
    module, package = _DRIVERS.get(driver, (driver, driver))
    implied = "" if "+" in written else f" (SQLAlchemy's default for {written}://)"
    reason = _scrub(str(cause), url)
    fixes = [f"pip install {package}"]
    rest = redact_url(url).split("://", 1)[1]
    for other in _ALTERNATIVES.get(backend, ()):
        if other == driver:
            continue
        other_module, other_package = _DRIVERS[other]
        try:
            found = importlib.util.find_spec(other_module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            fixes.append(f"write {backend}+{other}://{rest} to use {other} (installed)")
            break
    else:
        if backend in _ALTERNATIVES:
            other = next(o for o in _ALTERNATIVES[backend] if o != driver)
            fixes.append(f"write {backend}+{other}:// after pip install {_DRIVERS[other][1]}")
    return (f"dialect {backend}+{driver}{implied} needs the {module} module, which is not installed ({reason}); "
            f"either {', or '.join(fixes)}")


def sqlite_path(url: str) -> str | None:
    """The database file of an ``sqlite:///PATH`` URL (None for an in-memory database)."""
    if ":///" not in url:
        return None
    db = url.split(":///", 1)[1].split("?", 1)[0]
    return None if not db or db == ":memory:" else db


def _check_folder(path: Path, url: str, *, create: bool) -> None:
    folder = path.parent
    if folder.is_dir():
        return
    if create:
        folder.mkdir(parents=True, exist_ok=True)
        return
    missing = folder
    while not missing.parent.is_dir() and missing.parent != missing:
        missing = missing.parent
    what = "is not a folder" if folder.exists() or (missing.exists() and not missing.is_dir()) else "does not exist"
    raise ConfigError(f"--storage {redact_url(url)!r}: folder {folder} {what}; create it first or fix the path")


def journal_path(url: str) -> str:
    """The file path of a ``journal://`` URL (``journal:///abs/x.log`` -> ``/abs/x.log``)."""
    path = url[len(JOURNAL_PREFIX):]
    if not path or path == "/":
        raise ConfigError(f"--storage {url!r}: expected journal:///path/to/file.log")
    return path


#: query-string keys whose values are secrets (``?password=...`` is accepted by SQLAlchemy's drivers)
_SECRET_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword", "secret", "token"})
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:" + "|".join(sorted(_SECRET_KEYS)) + r")=)([^&;#]*)")


def redact_url(url: str) -> str:
    """Hide passwords in ``scheme://user:password@host`` and in ``?password=...`` (use it wherever a URL
    reaches a message or log)."""
    head, sep, tail = url.partition("://")
    path, qmark, query = tail.partition("?")
    if "@" in path and ":" in path.rsplit("@", 1)[0]:
        credentials, host = path.rsplit("@", 1)
        path = f"{credentials.split(':', 1)[0]}:***@{host}"
    if qmark:
        query = _QUERY_SECRET.sub(lambda m: m.group(1) + "***", "?" + query)[1:]
    return f"{head}{sep}{path}{qmark}{query}"


def _passwords(url: str) -> set[str]:
    """Every secret in ``url``: the ``user:password@`` part and ``?password=`` values (raw and %-decoded)."""
    from urllib.parse import unquote, unquote_plus

    head, sep, tail = url.partition("://")
    path, _, query = tail.partition("?")
    raw: list[str] = []
    if "@" in path and ":" in path.rsplit("@", 1)[0]:
        raw.append(path.rsplit("@", 1)[0].split(":", 1)[1])
    raw += [m.group(2) for m in _QUERY_SECRET.finditer("?" + query)]
    return {form for secret in raw for form in (secret, unquote(secret), unquote_plus(secret))} - {""}


def _scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with ``url`` redacted and its passwords (raw or %-decoded)
    hidden; a password shorter than 4 characters is hidden only where it stands as a word of its own."""
    text = text.replace(url, redact_url(url))
    for secret in sorted(_passwords(url), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text
