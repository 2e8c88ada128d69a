"""`aepipe server start|stop|status`: an MLflow tracking server on PostgreSQL, for a team.

Start: initialises a PostgreSQL cluster under the state directory if there is none (Debian's
`postgresql` binaries; run as the `postgres` user when we are root, as PostgreSQL refuses root),
starts it on 127.0.0.1, creates the database and its user if missing, then starts
`mlflow server` with that backend store and an artifact directory, and waits until it answers.
Stop: ends the MLflow server's whole process group and stops PostgreSQL.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from pipeline.core.errors import PipelineError

DB_NAME = DB_USER = "mlflow"
READY_TIMEOUT_S = 180


@dataclass(frozen=True)
class ServerConfig:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 5000
    db_port: int = 5433
    db_password: str = "mlflow"

    @property
    def pgdata(self) -> Path:
        return self.state_dir / "pgdata"

    @property
    def artifacts(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "mlflow.pid"

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def backend_uri(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}:{self.db_password}@{self.host}:{self.db_port}/{DB_NAME}"


def _binary(name: str, fallback_dirs: list[str], missing: str) -> str:
    """`name` on PATH, else in the first of `fallback_dirs` that has it; `missing` if none."""
    found = shutil.which(name) or (
        shutil.which(name, path=os.pathsep.join(fallback_dirs)) if fallback_dirs else None
    )
    if not found:
        raise PipelineError(missing)
    return found


def postgres_binary(name: str) -> str:
    """Debian installs PostgreSQL's server programs off PATH, one directory per version."""
    return _binary(
        name,
        sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True),
        f"PostgreSQL's `{name}` not found: install Debian's postgresql "
        "(apt-get install postgresql)",
    )


def _runuser() -> str:
    """util-linux's `runuser`, also when /usr/sbin is not on PATH (e.g. under `env -i`)."""
    return _binary(
        "runuser",
        ["/usr/sbin", "/sbin"],
        "running as root, the server needs `runuser` (util-linux) to start PostgreSQL as "
        "the postgres user; install util-linux or run as an ordinary user",
    )


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; drop to the `postgres` user when we are root."""
    return [_runuser(), "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _pg_ctl(config: ServerConfig, *args: str) -> list[str]:
    """The `pg_ctl` command line for this server's data directory, as the postgres user."""
    return _as_postgres([postgres_binary("pg_ctl"), "-D", str(config.pgdata), *args])


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"{what} failed: {detail[-1] if detail else result.returncode}")
    return result.stdout


def _psql(config: ServerConfig, sql: str) -> str:
    return _run(
        _as_postgres(
            [
                postgres_binary("psql"),
                "-h",
                str(config.pgdata),
                "-p",
                str(config.db_port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                sql,
            ]
        ),
        f"psql {sql!r}",
    )


def start_database(config: ServerConfig) -> None:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    if not (config.pgdata / "PG_VERSION").is_file():
        config.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(config.pgdata, "postgres", "postgres")
        _run(
            _as_postgres(
                [
                    postgres_binary("initdb"),
                    "-D",
                    str(config.pgdata),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ]
            ),
            "initdb",
        )
    if _database_running(config):
        return
    options = f"-c listen_addresses={config.host} -p {config.db_port} -k {config.pgdata}"
    _run(
        _pg_ctl(config, "-l", str(config.pgdata / "server.log"), "-o", options, "-w", "start"),
        "pg_ctl start",
    )


def ensure_database(config: ServerConfig) -> None:
    if _psql(config, f"SELECT 1 FROM pg_roles WHERE rolname = '{DB_USER}'").strip() != "1":
        _psql(config, f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{config.db_password}'")
    if _psql(config, f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'").strip() != "1":
        _psql(config, f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")


def _database_running(config: ServerConfig) -> bool:
    result = subprocess.run(
        _pg_ctl(config, "status"),
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def answers(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start(config: ServerConfig) -> float:
    """Start everything that is not running; return the seconds until MLflow answered.

    If anything fails, whatever this call started is stopped again.
    """
    started = time.monotonic()
    try:
        start_database(config)
        ensure_database(config)
        if not answers(config.uri):
            _start_tracking(config, started)
    except BaseException:
        stop(config)
        raise
    return time.monotonic() - started


def _start_tracking(config: ServerConfig, started: float) -> None:
    config.artifacts.mkdir(parents=True, exist_ok=True)
    with open(config.state_dir / "mlflow.log", "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                config.backend_uri,
                "--artifacts-destination",
                str(config.artifacts),
                "--host",
                config.host,
                "--port",
                str(config.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # MLflow's job runner serves GenAI features this project does not use; it would
            # start seven more Python processes.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    config.pid_file.write_text(str(process.pid))
    while not answers(config.uri):
        if process.poll() is not None:
            raise PipelineError(
                f"mlflow server exited {process.returncode}; see {config.state_dir / 'mlflow.log'}"
            )
        if time.monotonic() - started > READY_TIMEOUT_S:
            raise PipelineError(f"mlflow server did not answer within {READY_TIMEOUT_S} s")
        time.sleep(0.5)


def _group_members(group: int) -> list[psutil.Process]:
    """The live processes of a process group (zombies are dead already)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (psutil.Error, ProcessLookupError):
            continue
    return members


def stop(config: ServerConfig) -> None:
    """End the MLflow server's process group (and wait until it has ended), then PostgreSQL."""
    if config.pid_file.is_file():
        members = _group_members(int(config.pid_file.read_text()))
        for process in members:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(members, timeout=10)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=5)
        config.pid_file.unlink()
    if config.pgdata.is_dir() and _database_running(config):
        _run(_pg_ctl(config, "-m", "fast", "-w", "stop"), "pg_ctl stop")


def status(config: ServerConfig) -> str:
    database = "running" if config.pgdata.is_dir() and _database_running(config) else "stopped"
    tracking = "answering" if answers(config.uri) else "not answering"
    return f"PostgreSQL ({config.pgdata}): {database}; MLflow {config.uri}: {tracking}"
