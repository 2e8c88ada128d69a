"""Where MLflow runs go, and whether that store can be used.

Default store: `mlflow.db` (SQLite) and `mlruns/` at the root of the main repository, also when
a stage runs inside a DVC queue's temporary copy (`.dvc/tmp/exps/<tmp>/`), so queued experiments
land in the same store as workspace runs. `MLFLOW_TRACKING_URI` overrides it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from pipeline.core import paths
from pipeline.core.errors import TrackingError, one_line

EXPERIMENT_NAME = "autoencoder"
HEALTH_TIMEOUT_S = 3


def default_store(root: Path) -> tuple[str, Path]:
    """The embedded store: a SQLite file and an artifact directory in the repository."""
    return f"sqlite:///{root / 'mlflow.db'}", root / "mlruns"


def configured_uri() -> tuple[str, Path | None]:
    """The tracking URI to use, and the artifact directory when it is the embedded store."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri, None
    return default_store(paths.repository_root())


# Stores with runs, artifacts, logged models and a model registry, as this pipeline needs.
SUPPORTED_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql")
SQLITE_MAGIC = b"SQLite format 3\x00"


def check_uri(uri: str) -> None:
    """Refuse, in one line, a tracking URI this pipeline cannot log to."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in SUPPORTED_SCHEMES:
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={uri!r} is not a store this pipeline can use: set it to a "
            "tracking server (http://host:port, see `aepipe server`), sqlite:///path/mlflow.db "
            "or postgresql+psycopg2://..., or unset it to use ./mlflow.db"
        )
    if scheme in {"postgresql", "mysql", "mssql"}:
        _check_driver(uri)


def _check_driver(uri: str) -> None:
    """A database URI whose driver is not installed fails deep inside SQLAlchemy; say so here."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise TrackingError(
            f"MLFLOW_TRACKING_URI: cannot use this database URI ({one_line(exc)}); "
            "for PostgreSQL, postgresql+psycopg2://user:password@host:port/database works"
        ) from None


def _read_only_query(database: Path, query: str) -> bool:
    """Whether `query` returns a row, reading the SQLite file without writing to it."""
    try:
        connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return connection.execute(query).fetchone() is not None
        finally:
            connection.close()
    except sqlite3.Error:
        return False


def has_running_runs(database: Path) -> bool:
    return _read_only_query(database, "SELECT 1 FROM runs WHERE status = 'RUNNING' LIMIT 1")


def mlflow_tables_in(database: Path) -> bool:
    """Whether a SQLite file holds an MLflow store."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'experiments'"
    return _read_only_query(database, query)


def ensure_reachable(uri: str) -> None:
    """Fail in seconds, naming the URI, rather than after training or minutes of retries."""
    check_uri(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S):
                return
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it "
                "(`aepipe server start`) or unset MLFLOW_TRACKING_URI to use the local store"
            ) from None
    elif uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.parent.is_dir():
            raise TrackingError(f"MLflow store {uri}: directory {database.parent} does not exist")
        if database.exists() and not database.is_file():
            raise TrackingError(corrupted_store(uri, "not a file: a directory or a device"))
        if database.is_file() and database.stat().st_size:
            with open(database, "rb") as handle:
                if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                    raise TrackingError(corrupted_store(uri, "not a SQLite database"))


def corrupted_store(uri: str, reason: str) -> str:
    where = uri.removeprefix("sqlite:///")
    return (
        f"MLflow store {where} is unusable ({reason}): move it aside (`mv {where} "
        f"{where}.broken`) to start a new one, or restore it from a backup"
        if uri.startswith("sqlite:///")
        else f"MLflow store {uri} is unusable ({reason}): check the server and its database"
    )


def is_store_error(error: BaseException) -> bool:
    """Errors that mean the store failed (its database, its server), not the pipeline."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(error, MlflowException | SQLAlchemyError)


@contextlib.contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Turn a failing store into one line naming it and what to do."""
    try:
        yield
    except Exception as exc:
        if not is_store_error(exc):
            raise
        raise TrackingError(corrupted_store(uri, one_line(exc))) from None


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT_NAME)


def open_client(uri: str) -> Any:
    """An MlflowClient on `uri`. Making one opens the store, and the first opening of a SQLite
    store creates its schema: two processes doing that at once (two queued experiments in a
    fresh clone) fail with "table ... already exists", so it happens under the store lock."""
    import mlflow

    with store_lock():
        return mlflow.MlflowClient(tracking_uri=uri)


def store_lock() -> contextlib.AbstractContextManager:
    """Serialises check-then-write sequences on a SQLite store across processes (the embedded
    one, or one named by MLFLOW_TRACKING_URI, as a sweep's cells on one machine share it)."""
    uri, _ = configured_uri()
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()  # a server: its database handles concurrency
    lock_dir = Path(uri.removeprefix("sqlite:///")).parent / paths.STATE_DIR
    lock_dir.mkdir(exist_ok=True)
    return FileLock(lock_dir / "mlflow.lock")
