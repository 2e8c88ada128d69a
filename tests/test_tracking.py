from pathlib import Path

import pytest

from pipeline.core.errors import TrackingError
from pipeline.core.paths import repository_root
from pipeline.tracking import provenance, store
from tests.conftest import free_port


def test_queue_copies_resolve_to_the_main_repository(tmp_path):
    root = tmp_path / "project"
    temp_copy = root / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    (temp_copy / "sub").mkdir(parents=True)
    assert repository_root(temp_copy) == root
    assert repository_root(temp_copy / "sub") == root
    assert repository_root(root) == root
    uri, artifacts = store.default_store(repository_root(temp_copy))
    assert uri == f"sqlite:///{root}/mlflow.db" and artifacts == root / "mlruns"


def test_tracking_uri_env_overrides_the_embedded_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert store.configured_uri() == ("http://127.0.0.1:5999", None)


def test_an_unreachable_server_fails_fast_and_names_the_uri(monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match=f"MLflow tracking server {uri} is unreachable"):
        store.ensure_reachable(uri)
    asked = []

    def urlopen(url, timeout):  # a server that never answers: only the timeout ends the wait
        asked.append((url, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(store.urllib.request, "urlopen", urlopen)
    with pytest.raises(TrackingError, match="unreachable \\(timed out\\)"):
        store.ensure_reachable(uri)
    assert asked == [(f"{uri}/health", store.HEALTH_TIMEOUT_S)]


def test_pipeline_run_id_is_shared_below_one_dvc_process(monkeypatch):
    class Proc:
        def __init__(self, pid, argv):
            self.pid, self._argv = pid, argv

        def cmdline(self):
            return self._argv

        def create_time(self):
            return 1234.5

    chain = [
        Proc(10, ["/bin/sh", "-c", "aepipe train basic"]),
        Proc(9, ["/venv/bin/python", "/venv/bin/dvc", "repro"]),
    ]

    class Me:
        def parents(self):
            return chain

    monkeypatch.delenv("AEPIPE_PIPELINE_RUN", raising=False)
    monkeypatch.setattr(provenance.psutil, "Process", Me)
    first = provenance.pipeline_run_id()
    assert first == provenance.pipeline_run_id()
    chain[1] = Proc(11, ["/venv/bin/python", "/venv/bin/dvc", "repro"])
    assert provenance.pipeline_run_id() != first
    monkeypatch.setenv("AEPIPE_PIPELINE_RUN", "fixed")
    assert provenance.pipeline_run_id() == "fixed"


def test_git_state_ignores_pipeline_outputs(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    for name in ("code.py", "dvc.lock", "reports/metrics.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("v1\n")
    git("add", "-A")
    git("commit", "-qm", "c")
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "reports/metrics.json").write_text("v2\n")
    assert provenance.git_state(tmp_path).dirty is False
    (tmp_path / "code.py").write_text("v2\n")
    state = provenance.git_state(tmp_path)
    assert state.dirty is True and "+v2" in state.diff
    assert provenance.git_state(Path("/")).commit == "unknown"


def test_runs_whose_process_died_are_marked_killed_and_no_others(tmp_path, monkeypatch):
    """A SIGKILL leaves a run RUNNING; the next stage that starts ends it (and its pipeline
    run) as KILLED: only runs of this repository, and only if their process is gone."""
    import subprocess
    import sys

    import mlflow
    import psutil

    from pipeline.tracking import runs
    from pipeline.tracking.tags import TAG_PROCESS, TAG_REPOSITORY

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("autoencoder")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_identity = provenance.process_identity(psutil.Process(dead.pid))
    dead.wait()
    alive_identity = provenance.process_identity(psutil.Process())
    here, elsewhere = str(tmp_path), "/some/other/repository"

    def running(identity, repository):
        tags = {TAG_PROCESS: identity, TAG_REPOSITORY: repository}
        return client.create_run(experiment, tags=tags).info.run_id

    pipeline_run = client.create_run(experiment).info.run_id
    client.set_terminated(pipeline_run, "FINISHED")  # an earlier stage ended it; then the kill
    orphan = client.create_run(
        experiment,
        tags={TAG_PROCESS: dead_identity, TAG_REPOSITORY: here, "mlflow.parentRunId": pipeline_run},
    ).info.run_id
    live = running(alive_identity, here)
    other_repository = running(dead_identity, elsewhere)
    other_host = running("another-host:1:1.0", here)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert runs.sweep_orphaned_runs() == [orphan]  # as the validate stage does
    status = {
        run: client.get_run(run).info.status
        for run in (orphan, pipeline_run, live, other_repository, other_host)
    }
    assert status == {
        orphan: "KILLED",
        pipeline_run: "KILLED",
        live: "RUNNING",
        other_repository: "RUNNING",
        other_host: "RUNNING",
    }
    assert runs.end_orphaned_runs(client, experiment) == []


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("foo://bar", "is not a store this pipeline can use"),
        ("/a/plain/path", "is not a store this pipeline can use"),
        ("file:///tmp/mlruns", "is not a store this pipeline can use"),
        ("postgresql://u:p@127.0.0.1:1/db", "No module named .psycopg.*postgresql\\+psycopg2://"),
        ("mysql://u:p@127.0.0.1:1/db", "cannot use this database URI"),
    ],
)
def test_unusable_tracking_uris_are_one_line(uri, message):
    with pytest.raises(TrackingError, match=message) as caught:
        store.check_uri(uri)
    assert "\n" not in str(caught.value)


def test_lookups_never_create_or_adopt_a_store(tmp_path, monkeypatch):
    """verify, lineage and compare read the store: a mistyped path, an empty file or a SQLite
    file of something else is named, and nothing is written to it."""
    import sqlite3

    from pipeline.tracking.finder import RunFinder

    missing = tmp_path / "typo" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    with pytest.raises(TrackingError, match="does not exist"):
        RunFinder.open_existing()
    empty = tmp_path / "empty.db"
    empty.touch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{empty}")
    with pytest.raises(TrackingError, match="no MLflow store there"):
        RunFinder.open_existing()
    assert empty.stat().st_size == 0
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (text)")
    before = other.read_bytes()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    with pytest.raises(TrackingError, match="a SQLite file without MLflow's tables"):
        RunFinder.open_existing()
    assert other.read_bytes() == before
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)  # the embedded store of a fresh clone: none yet, not an error
    assert RunFinder.open_existing() is None and not (tmp_path / "mlflow.db").exists()
