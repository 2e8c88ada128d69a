"""`aepipe server`: the team's MLflow tracking server on PostgreSQL. What can be checked without
starting it is here; `test_e2e.py` starts it for real and runs the pipeline against it."""

import http.server
import json
import os
import stat
import subprocess
import threading
import time

import psutil
import pytest

from pipeline import cli
from pipeline.core.errors import PipelineError
from pipeline.ops import postgres, server
from tests.conftest import error_message, free_port


def test_as_root_postgres_runs_through_runuser_found_off_path(monkeypatch):
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    searched = []

    def which(name, path=None):
        searched.append(path)
        return "/usr/sbin/runuser" if path == "/usr/sbin:/sbin" else None

    monkeypatch.setattr(postgres.shutil, "which", which)
    assert postgres._as_postgres(["pg_ctl", "status"]) == [
        "/usr/sbin/runuser",
        "-u",
        "postgres",
        "--",
        "pg_ctl",
        "status",
    ]
    assert searched == [None, "/usr/sbin:/sbin"]
    monkeypatch.setattr(postgres.shutil, "which", lambda name, path=None: None)
    with pytest.raises(PipelineError, match="needs `runuser`"):
        postgres._as_postgres(["pg_ctl", "status"])
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 1000)
    assert postgres._as_postgres(["pg_ctl", "status"]) == ["pg_ctl", "status"]


@pytest.fixture
def bystander():
    """A process this project did not start (as far as the server's record is concerned)."""
    process = subprocess.Popen(["sleep", "300"])
    yield psutil.Process(process.pid)
    process.kill()
    process.wait()


def test_stop_never_signals_a_process_the_record_no_longer_names(tmp_path, bystander):
    config = server.ServerConfig(state_dir=tmp_path)
    for started in (bystander.create_time() - 100, bystander.create_time()):
        # pid reused by another program (other start time), or the same process but no MLflow
        config.record_file.write_text(json.dumps({"pid": bystander.pid, "started": started}))
        assert server.stop_tracking(config) == "the MLflow server was not running"
        assert bystander.is_running() and bystander.status() != psutil.STATUS_ZOMBIE
        assert not config.record_file.exists()  # the stale record is gone


def test_an_mlflow_server_of_another_state_directory_is_not_ours(tmp_path):
    """A record copied along with its directory names the original's server."""
    other = tmp_path / "original" / "artifacts"
    fake = subprocess.Popen(
        ["python3", "-c", "import time; time.sleep(300)", "mlflow", "server",
         "--artifacts-destination", str(other), "--port", "5999"]
    )  # fmt: skip
    try:
        process = psutil.Process(fake.pid)
        while "mlflow" not in process.cmdline():  # until the child has exec'd
            time.sleep(0.01)
        copy = server.ServerConfig(state_dir=tmp_path / "copy")
        copy.state_dir.mkdir()
        copy.record_file.write_text(json.dumps({"pid": fake.pid, "started": process.create_time()}))
        assert server.stop_tracking(copy) == "the MLflow server was not running"
        assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        original = server.ServerConfig(state_dir=tmp_path / "original")
        original.state_dir.mkdir()
        original.record_file.write_text(
            json.dumps({"pid": fake.pid, "started": process.create_time()})
        )
        assert server.recorded_server(original).pid == fake.pid
        message = error_message(PipelineError, server.start, original)  # another --port
        assert "runs on port 5999 (pid" in message and "not 5000: stop it first" in message
    finally:
        fake.kill()
        fake.wait()


def test_a_postmaster_pid_file_naming_another_process_is_never_trusted(tmp_path, bystander):
    """pg_ctl signals any live pid its postmaster.pid names; a stale file can name anything."""
    cluster = postgres.Cluster(tmp_path / "pgdata", "127.0.0.1", 5999)
    cluster.pgdata.mkdir()
    (cluster.pgdata / "PG_VERSION").write_text("15\n")
    started = int(bystander.create_time())
    lines = [
        bystander.pid,
        cluster.pgdata,
        started,
        5999,
        cluster.pgdata,
        "127.0.0.1",
        "1 2",
        "ready",
    ]
    (cluster.pgdata / "postmaster.pid").write_text("\n".join(map(str, lines)) + "\n")
    assert not cluster.running() and cluster.postmaster() is None
    cluster.stop()  # nothing to stop: no pg_ctl, no signal
    assert server.stop(server.ServerConfig(state_dir=tmp_path)) == [
        "the MLflow server was not running"
    ]
    assert bystander.is_running() and bystander.status() != psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("text", ["0", "-1", "70000", "http"])
def test_ports_outside_1_to_65535_are_refused_by_the_command_line(text):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["server", "start", "--port", text])


@pytest.mark.parametrize(
    "content", ["abc", "1234", '{"pid": "x"}', "[]", '{"pid": -1, "started": 1}']
)
def test_a_record_this_project_did_not_write_is_refused_in_one_line(tmp_path, content):
    config = server.ServerConfig(state_dir=tmp_path)
    config.record_file.write_text(content)
    message = error_message(PipelineError, server.stop, config)
    assert "mlflow.json: not a record of a server this project started; nothing signalled" in (
        message
    )
    assert config.record_file.read_text() == content


class Impostor(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and a page: /health looks fine, MLflow's API does not."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.fixture
def impostor():
    listener = http.server.HTTPServer(("127.0.0.1", free_port()), Impostor)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    yield listener.server_address[1]
    listener.shutdown()


def test_start_does_not_adopt_whatever_answers_on_its_port(tmp_path, impostor):
    assert server.answers(f"http://127.0.0.1:{impostor}")  # /health alone would be fooled
    assert not server.speaks_mlflow(f"http://127.0.0.1:{impostor}")
    config = server.ServerConfig(state_dir=tmp_path / "state", port=impostor, db_port=free_port())
    message = error_message(PipelineError, server.start, config)
    assert f"port {impostor} is taken by pid {os.getpid()}" in message
    assert "not by an MLflow server this project started" in message and "--port" in message
    assert not (tmp_path / "state").exists()  # nothing was started or created


def test_start_refuses_a_database_port_taken_by_another_program(tmp_path, impostor):
    config = server.ServerConfig(state_dir=tmp_path / "state", port=free_port(), db_port=impostor)
    message = error_message(PipelineError, server.start, config)
    assert f"port {impostor} is taken by" in message and "--db-port" in message
    assert not (tmp_path / "state").exists()


def test_the_database_password_is_random_private_and_replaceable(tmp_path, monkeypatch):
    monkeypatch.delenv(server.PASSWORD_ENV, raising=False)
    config = server.ServerConfig(state_dir=tmp_path)
    first = server.database_password(config)
    assert len(first) >= 24 and first == server.database_password(config)
    assert stat.S_IMODE(config.password_file.stat().st_mode) == 0o600
    assert server.database_password(server.ServerConfig(state_dir=tmp_path / "b")) != first
    monkeypatch.setenv(server.PASSWORD_ENV, "it's @:/#\\ secret")
    assert server.database_password(config) == "it's @:/#\\ secret"


def test_passwords_are_quoted_for_sql_and_for_the_uri():
    assert postgres.sql_literal("it's") == "'it''s'"
    assert postgres.sql_literal("a\\b") == "'a\\b'"  # standard conforming strings
    uri = postgres.backend_uri("127.0.0.1", 5433, "p@ss:w/rd#1'%")
    assert uri == "postgresql+psycopg2://mlflow:p%40ss%3Aw%2Frd%231%27%25@127.0.0.1:5433/mlflow"
    from sqlalchemy.engine import make_url

    assert make_url(uri).password == "p@ss:w/rd#1'%"
    with pytest.raises(PipelineError, match="NUL"):
        postgres.sql_literal("a\0b")
