"""Where MLflow runs go, and whether that store can be used.

Default store: `mlflow.db` (SQLite) and `mlruns/` at the root of the main repository, also when
a stage runs inside a DVC queue's temporary copy (`.dvc/tmp/exps/<tmp>/`), so queued experiments
land in the same store as workspace runs. `MLFLOW_TRACKING_URI` overrides it.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from filelock import FileLock

from pipeline.core import paths
from pipeline.core.errors import TrackingError

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


def ensure_reachable(uri: str) -> None:
    """Fail in seconds, naming the URI, rather than after training or minutes of retries."""
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


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT_NAME)


def store_lock() -> contextlib.AbstractContextManager:
    """Serialises check-then-write sequences on the embedded store across processes."""
    _, artifact_dir = configured_uri()
    if artifact_dir is None:
        return contextlib.nullcontext()  # a server: its database handles concurrency
    lock_dir = artifact_dir.parent / paths.STATE_DIR
    lock_dir.mkdir(exist_ok=True)
    return FileLock(lock_dir / "mlflow.lock")
