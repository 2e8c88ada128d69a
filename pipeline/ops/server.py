"""`aepipe server start|stop|status`: an MLflow tracking server on PostgreSQL, for a team.

Start checks both ports first: a port something else listens on is refused in one line naming it.
Then it initialises a PostgreSQL cluster under the state directory if there is none, starts it on
127.0.0.1, sets the `mlflow` role's password and creates its database, starts `mlflow server`
(the database URI in its environment, not on its command line), and waits until that process,
and no other, answers MLflow's API. It records the server's process (pid and start time) in
`mlflow.json`.

Stop ends only that process and its children, after checking that the recorded pid is still the
process that was started, and stops the cluster. A stale or foreign record is refused in one
line; nothing else is ever signalled.

The database password is `AEPIPE_DB_PASSWORD` when set, else a random one generated on the first
start and kept in `db_password` (readable by its owner only).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from pipeline.core.errors import PipelineError
from pipeline.ops.postgres import Cluster, backend_uri, postgres_binary

READY_TIMEOUT_S = 180
PASSWORD_ENV = "AEPIPE_DB_PASSWORD"


@dataclass(frozen=True)
class ServerConfig:
    state_dir: Path
    host: str = "127.0.0.1"  # PostgreSQL's address: only the MLflow server talks to it
    listen: str = "127.0.0.1"  # where MLflow accepts clients: 0.0.0.0 for other machines
    port: int = 5000
    db_port: int = 5433

    @property
    def pgdata(self) -> Path:
        return self.state_dir / "pgdata"

    @property
    def artifacts(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def record_file(self) -> Path:
        return self.state_dir / "mlflow.json"

    @property
    def password_file(self) -> Path:
        return self.state_dir / "db_password"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "mlflow.log"

    @property
    def uri(self) -> str:
        return f"http://{self.reachable_at}:{self.port}"

    @property
    def reachable_at(self) -> str:
        """The address clients use: this machine's name when MLflow listens on every
        interface."""
        return socket.gethostname() if self.listen in ("0.0.0.0", "::") else self.listen

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.pgdata, self.host, self.db_port)


def database_password(config: ServerConfig) -> str:
    """`AEPIPE_DB_PASSWORD`, else the saved one, else a new random one saved (mode 0600)."""
    if configured := os.environ.get(PASSWORD_ENV):
        return configured
    if config.password_file.is_file():
        return config.password_file.read_text().strip()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    descriptor = os.open(config.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(password + "\n")
    return password


def listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def who_listens(port: int) -> str:
    """The program listening on `port`, as far as this user may see it."""
    with contextlib.suppress(psutil.Error, OSError):
        for connection in psutil.net_connections(kind="tcp"):
            listens = connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
            if listens and connection.pid:
                process = psutil.Process(connection.pid)
                return f"pid {connection.pid} ({' '.join(process.cmdline())[:80]})"
    return "another program"


def answers(uri: str) -> bool:
    """Something answers HTTP 200 on `uri`'s /health."""
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def speaks_mlflow(uri: str) -> bool:
    """`uri` answers MLflow's REST API (an experiments search), not just any HTTP."""
    url = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200 and isinstance(json.loads(response.read()), dict)
    except (OSError, ValueError):
        return False


def recorded_server(config: ServerConfig) -> psutil.Process | None:
    """The MLflow server process this project started and recorded, if it still runs. A record
    whose pid now names another process (pid reuse, reboot) is removed; a record that is not
    one this project wrote is refused."""
    if not config.record_file.is_file():
        return None
    try:
        record = json.loads(config.record_file.read_text())
        pid, started = int(record["pid"]), float(record["started"])
        if pid <= 0:
            raise ValueError(pid)
    except (ValueError, KeyError, TypeError, OverflowError):
        raise PipelineError(
            f"{config.record_file}: not a record of a server this project started; nothing "
            "signalled (delete the file if no server runs)"
        ) from None
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - started) < 0.01
        ours = same and _serves_artifacts_of(process.cmdline(), config)
    except (psutil.Error, ValueError, OverflowError):
        ours = False
    if not ours:
        config.record_file.unlink()
        return None
    return process


def _serves_artifacts_of(command: list[str], config: ServerConfig) -> bool:
    """An `mlflow server` command line with this state directory's artifacts (a record copied
    along with its directory names the original's server, which is not this one)."""
    flag = "--artifacts-destination"
    if not {"mlflow", "server", flag} <= set(command) or command.index(flag) + 1 >= len(command):
        return False
    return Path(command[command.index(flag) + 1]).resolve() == config.artifacts.resolve()


def _port_of(process: psutil.Process) -> int | None:
    command = process.cmdline()
    with contextlib.suppress(ValueError, IndexError):
        return int(command[command.index("--port") + 1])
    return None


def start(config: ServerConfig) -> tuple[float, bool]:
    """Start what is not running; return (seconds until MLflow answered, already running).

    If anything fails, what this call started is stopped again, and nothing else.
    """
    began = time.monotonic()
    running = recorded_server(config)
    if running is not None:
        port = _port_of(running)
        if port != config.port:
            raise PipelineError(
                f"the MLflow server of {config.state_dir} runs on port {port} (pid "
                f"{running.pid}), not {config.port}: stop it first (aepipe server stop)"
            )
        if speaks_mlflow(config.uri):
            return 0.0, True
    if listening("127.0.0.1", config.port):
        raise PipelineError(
            f"port {config.port} is taken by {who_listens(config.port)}, not by an MLflow server "
            "this project started: stop it, or choose another port with --port"
        )
    cluster = config.cluster
    if listening(config.host, config.db_port) and not cluster.serves_port():
        raise PipelineError(
            f"port {config.db_port} is taken by {who_listens(config.db_port)}, not by this "
            "server's PostgreSQL: stop it, or choose another port with --db-port"
        )
    postgres_binary("pg_ctl")  # installed at all?
    password = database_password(config)
    started_database = cluster.start()
    try:
        cluster.ensure_database(password)
        _start_tracking(config, password, began)
    except BaseException:
        stop_tracking(config)
        if started_database:
            cluster.stop()
        raise
    return time.monotonic() - began, False


def _start_tracking(config: ServerConfig, password: str, began: float) -> None:
    config.artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--artifacts-destination",
        str(config.artifacts),
        "--host",
        config.listen,
        "--port",
        str(config.port),
        "--workers",
        "1",
    ]
    environment = {
        **os.environ,
        # In the environment (readable by its owner only), not on the command line (by anyone).
        "MLFLOW_BACKEND_STORE_URI": backend_uri(config.host, config.db_port, password),
        # MLflow's job runner serves GenAI features this project does not use; it would start
        # seven more Python processes.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with open(config.log_file, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=environment,
        )
    started = psutil.Process(process.pid).create_time()
    config.record_file.write_text(json.dumps({"pid": process.pid, "started": started}))
    while not speaks_mlflow(config.uri):
        if process.poll() is not None:
            raise PipelineError(
                f"mlflow server exited with status {process.returncode}; see {config.log_file}"
            )
        if time.monotonic() - began > READY_TIMEOUT_S:
            raise PipelineError(
                f"mlflow server did not answer within {READY_TIMEOUT_S} s; see {config.log_file}"
            )
        time.sleep(0.5)


def stop_tracking(config: ServerConfig) -> str:
    """End the recorded MLflow server and its children, and nothing else."""
    process = recorded_server(config)
    if process is None:
        return "the MLflow server was not running"
    family = [process]
    with contextlib.suppress(psutil.Error):
        family += process.children(recursive=True)
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    for member in alive:
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(alive, timeout=5)
    config.record_file.unlink(missing_ok=True)
    return f"stopped the MLflow server (pid {process.pid})"


def stop(config: ServerConfig) -> list[str]:
    """Stop the MLflow server this project started, then its PostgreSQL cluster."""
    done = [stop_tracking(config)]
    cluster = config.cluster
    if cluster.running():
        cluster.stop()
        done.append(f"stopped PostgreSQL ({config.pgdata})")
    return done


def status(config: ServerConfig) -> str:
    """The state of the state directory's servers, on the port they run on (whatever `--port`
    says: the one recorded when they started)."""
    database = "running" if config.cluster.running() else "stopped"
    running = recorded_server(config)
    if running is None:
        return f"PostgreSQL ({config.pgdata}): {database}; MLflow: not running"
    uri = f"http://{config.reachable_at}:{_port_of(running) or config.port}"
    tracking = "answering" if speaks_mlflow(uri) else "started, not answering"
    return f"PostgreSQL ({config.pgdata}): {database}; MLflow {uri}: {tracking}"
