"""The PostgreSQL cluster behind the team's tracking server, from Debian's `postgresql` binaries.

PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user. SQL goes
to `psql` on standard input, never on a command line, and values are quoted as SQL literals: a
password shows up in no process list and no error message.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import psutil

from pipeline.core.errors import PipelineError

DB_NAME = DB_USER = "mlflow"


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


def sql_literal(text: str) -> str:
    """`text` as an SQL string literal (standard conforming strings: only `'` is special)."""
    if "\0" in text:
        raise PipelineError("a database password cannot contain a NUL character")
    return "'" + text.replace("'", "''") + "'"


def backend_uri(host: str, port: int, password: str) -> str:
    """The SQLAlchemy URI of the MLflow database, the password quoted (`@:/#` are allowed)."""
    secret = urllib.parse.quote(password, safe="")
    return f"postgresql+psycopg2://{DB_USER}:{secret}@{host}:{port}/{DB_NAME}"


def _run(command: list[str], what: str, stdin: str | None = None) -> str:
    """Run `command`; on failure, one line naming `what` (never the command's input)."""
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"{what} failed: {detail[-1] if detail else result.returncode}")
    return result.stdout


@dataclass(frozen=True)
class Cluster:
    pgdata: Path
    host: str
    port: int

    def _pg_ctl(self, *args: str) -> list[str]:
        return _as_postgres([postgres_binary("pg_ctl"), "-D", str(self.pgdata), *args])

    def postmaster(self) -> psutil.Process | None:
        """The PostgreSQL server of this data directory, if it runs. `pg_ctl` trusts any live pid
        in `postmaster.pid`; a stale or copied file can name another process, so the pid must be
        a `postgres` process started with this data directory at the time the file records."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, datadir, started = int(lines[0]), Path(lines[1]), int(lines[2])
            process = psutil.Process(pid)
            command, created = process.cmdline(), process.create_time()
        except (OSError, ValueError, IndexError, psutil.Error):
            return None
        here = self.pgdata.resolve()
        ours = (
            datadir.resolve() == here
            and Path(command[0] if command else "").name in {"postgres", "postmaster"}
            and "-D" in command[:-1]
            and Path(command[command.index("-D") + 1]).resolve() == here
            and abs(created - started) < 5
        )
        return process if ours else None

    def running(self) -> bool:
        return self.postmaster() is not None

    def serves_port(self) -> bool:
        """Running, and listening on `port` (the fourth line of its postmaster.pid)."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) > 3 and lines[3].strip() == str(self.port) and self.running()

    def start(self) -> bool:
        """Create the cluster if there is none and start it; True if this call started it."""
        if self.running():
            return False
        if not (self.pgdata / "PG_VERSION").is_file():
            self.pgdata.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.pgdata, "postgres", "postgres")
            initdb = [
                postgres_binary("initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ]
            _run(_as_postgres(initdb), "initdb")
        log = self.pgdata / "server.log"
        # pg_ctl hands these to a shell: quote the socket directory (a path may hold spaces);
        # PostgreSQL reads it as a list of directories, where double quotes keep one whole.
        socket_dir = shlex.quote(f'"{self.pgdata}"')
        options = f"-c listen_addresses={self.host} -p {self.port} -k {socket_dir}"
        _run(
            self._pg_ctl("-l", str(log), "-o", options, "-w", "start"),
            f"starting PostgreSQL on {self.host}:{self.port} (see {log})",
        )
        return True

    def stop(self) -> None:
        if self.running():
            _run(self._pg_ctl("-m", "fast", "-w", "stop"), "stopping PostgreSQL")

    def psql(self, sql: str, what: str) -> str:
        """Run `sql` (on standard input) as the postgres user; `what` names it in errors."""
        command = [
            postgres_binary("psql"),
            "-h",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-tA",
            "-f",
            "-",
        ]
        return _run(_as_postgres(command), what, stdin=sql)

    def ensure_database(self, password: str) -> None:
        """The `mlflow` role with this password (applied on every start, so a changed password
        takes effect) and its database."""
        role_exists = self.psql(
            f"SELECT 1 FROM pg_roles WHERE rolname = {sql_literal(DB_USER)};", "looking up roles"
        ).strip()
        verb = "ALTER" if role_exists == "1" else "CREATE"
        self.psql(
            f"{verb} ROLE {DB_USER} WITH LOGIN PASSWORD {sql_literal(password)};",
            f"setting the password of the {DB_USER} role",
        )
        database_exists = self.psql(
            f"SELECT 1 FROM pg_database WHERE datname = {sql_literal(DB_NAME)};",
            "looking up databases",
        ).strip()
        if database_exists != "1":
            self.psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER};", "creating the database")
