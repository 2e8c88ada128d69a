import os
from pathlib import Path

import pytest

from pipeline.core import processes
from pipeline.core.errors import TrackingError
from pipeline.core.paths import repository_root
from pipeline.tracking import provenance, store
from tests.conftest import free_port, mlflow_server, processes_running, stop_server


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
    monkeypatch.setattr(processes.psutil, "Process", Me)
    first = processes.pipeline_run_id()
    assert first == processes.pipeline_run_id()
    chain[1] = Proc(11, ["/venv/bin/python", "/venv/bin/dvc", "repro"])
    assert processes.pipeline_run_id() != first
    monkeypatch.setenv("AEPIPE_PIPELINE_RUN", "fixed")
    assert processes.pipeline_run_id() == "fixed"


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
    dead_identity = processes.process_identity(psutil.Process(dead.pid))
    dead.wait()
    alive_identity = processes.process_identity(psutil.Process())
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


def test_a_store_path_that_is_a_directory_is_one_line_at_once(tmp_path):
    """SQLAlchemy would retry opening it for about two minutes before failing."""
    (tmp_path / "mlflow.db").mkdir()
    with pytest.raises(TrackingError, match=r"mlflow\.db is unusable \(not a file"):
        store.ensure_reachable(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_run_links_open_the_model_training_view_where_the_ui_answers(monkeypatch):
    from pipeline.tracking.finder import RunFinder

    monkeypatch.delenv("AEPIPE_UI", raising=False)
    local = RunFinder(None, "3", "sqlite:///x/mlflow.db")
    assert local.link("r1") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/r1?workflowType=machine_learning"
    )
    monkeypatch.setenv("AEPIPE_UI", "http://127.0.0.1:5050/")
    assert local.link("r1").startswith("http://127.0.0.1:5050/#/experiments/3/runs/r1?")
    server = RunFinder(None, "3", "http://10.0.0.2:5001")
    assert server.link("r1").startswith("http://10.0.0.2:5001/#/experiments/3/runs/r1?")


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


@pytest.fixture
def recorder_store(tmp_path, monkeypatch, empty_store) -> str:
    """A store of this test's own, as the stage's recorder will find it."""
    import shutil

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _stage_tags(tmp_path) -> dict[str, str]:
    from pipeline.tracking.runs import TAG_GROUP_PROCESS
    from pipeline.tracking.tags import TAG_GROUP, TAG_REPOSITORY, TAG_STAGE

    return {
        TAG_STAGE: "evaluate",
        TAG_GROUP: "group1",
        TAG_GROUP_PROCESS: "host:1:1.0",
        TAG_REPOSITORY: str(tmp_path),
        "git.commit": "0123456789abcdef",
        "dvc.dep.data/x.npy": "d41d8cd98f00b204e9800998ecf8427e",
    }


def _stage_runs(uri):
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(store.experiment_name())
    if experiment is None:
        return {}
    return {
        run.data.tags.get("aepipe.role", run.info.run_name): run
        for run in client.search_runs([experiment.experiment_id])
    }


def recorders_ended() -> None:
    """Wait until the recorder processes this test started have exited (each ends its run, then
    leaves, without a deadline the test could miss on a loaded machine)."""
    import psutil

    mine = processes_running("pipeline.tracking.recorder", psutil.Process().children())
    _, alive = psutil.wait_procs(mine, timeout=600)
    assert not alive


def test_the_recorder_logs_what_the_stage_queued_and_ends_finished(
    tmp_path, monkeypatch, recorder_store
):
    from pipeline.tracking.recorder import recording

    uri = recorder_store
    with recording("evaluate", _stage_tags(tmp_path), "a diff") as run:
        assert run.input_md5s == {"data/x.npy": "d41d8cd98f00b204e9800998ecf8427e"}
        run.log_params({"seed": 3})
        for step in (1, 2):
            run.log_metrics({"loss": 1.0 / step}, step=step)
        run.confirm()
        run.log_metric_tree({"denoiser_on_noisy": {"psnr": 19.5}, "model_kind": "dense"})
        run_id = run.run_id
    stage, pipeline = _stage_runs(uri)["evaluate"], _stage_runs(uri)["pipeline"]
    assert stage.info.run_id == run_id
    assert (stage.info.status, pipeline.info.status) == ("FINISHED", "FINISHED")
    assert stage.data.params == {"seed": "3"}
    assert stage.data.metrics == {"loss": 0.5, "denoiser_on_noisy.psnr": 19.5}
    assert stage.data.tags["mlflow.parentRunId"] == pipeline.info.run_id
    assert pipeline.data.tags["aepipe.process"] == "host:1:1.0"
    assert "aepipe.pipeline_process" not in stage.data.tags
    assert stage.data.tags["aepipe.recorder"].count(":") == 2


@pytest.mark.parametrize(
    ("error", "status"), [(ValueError("stage bug"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_the_recorder_ends_the_run_as_the_stage_ended(
    tmp_path, monkeypatch, recorder_store, error, status
):
    from pipeline.tracking.recorder import recording

    uri = recorder_store
    with pytest.raises(type(error)), recording("evaluate", _stage_tags(tmp_path), None) as run:
        run.log_params({"seed": 3})
        raise error
    recorders_ended()
    runs = _stage_runs(uri)
    assert (runs["evaluate"].info.status, runs["pipeline"].info.status) == (status, status)
    assert runs["evaluate"].data.params == {"seed": "3"}


@pytest.mark.parametrize(
    ("error", "status"), [(ValueError("stage bug"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_stage_that_ends_before_its_run_opens_still_gets_its_status(
    tmp_path, monkeypatch, recorder_store, error, status
):
    """The race of a busy machine, made certain: the store stays locked until the stage has
    failed and stopped waiting for its recorder. The run still opens, and ends as the stage
    ended, not KILLED for want of an answer."""
    from filelock import FileLock

    from pipeline.tracking import recorder

    uri = recorder_store
    monkeypatch.setattr(recorder, "GRACE_S", 0.1)
    store = FileLock(tmp_path / ".aepipe" / "mlflow.lock")
    (tmp_path / ".aepipe").mkdir()
    with store:
        with (
            pytest.raises(type(error)),
            recorder.recording("evaluate", _stage_tags(tmp_path), None) as run,
        ):
            run.log_params({"seed": 3})
            raise error
        assert not (tmp_path / "mlflow.db").exists() or not _stage_runs(uri).get("evaluate")
    recorders_ended()
    runs = _stage_runs(uri)
    assert (runs["evaluate"].info.status, runs["pipeline"].info.status) == (status, status)


def test_a_call_the_recorder_cannot_log_fails_the_stage_at_its_end(
    tmp_path, monkeypatch, recorder_store
):
    from pipeline.tracking.recorder import recording

    uri = recorder_store
    with (
        pytest.raises(TrackingError, match=r"MLflow logging failed: .*no-such-file"),
        recording("evaluate", _stage_tags(tmp_path), None) as run,
    ):
        run.log_artifact(tmp_path / "no-such-file")
        run.log_params({"seed": 3})  # not logged: the run has failed
    stage = _stage_runs(uri)["evaluate"]
    assert stage.info.status == "FAILED"
    assert stage.data.params == {}


def test_a_store_the_recorder_cannot_open_fails_before_the_stage_works(
    tmp_path, monkeypatch, recorder_store
):
    from pipeline.tracking.recorder import recording

    (tmp_path / "mlflow.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    worked = []
    with (
        pytest.raises(TrackingError, match=r"mlflow\.db is unusable"),
        recording("evaluate", _stage_tags(tmp_path), None) as run,
    ):
        run.confirm()
        worked.append(True)
    assert not worked


def test_a_recorder_that_dies_fails_the_stage_in_one_line(tmp_path, monkeypatch, recorder_store):
    import psutil

    from pipeline.core.errors import PipelineError
    from pipeline.tracking.recorder import RECORDER_GONE, recording

    with (
        pytest.raises(PipelineError, match=RECORDER_GONE),
        recording("evaluate", _stage_tags(tmp_path), None) as run,
    ):
        run.confirm()
        (helper,) = processes_running(  # the recorder this test started
            "pipeline.tracking.recorder", psutil.Process().children()
        )
        helper.kill()
        helper.wait()
        run.log_params({"seed": 3})


def test_ctrl_c_while_the_last_calls_are_logged_ends_the_run_killed(
    tmp_path, monkeypatch, recorder_store
):
    from pipeline.tracking import recorder

    uri = recorder_store
    waited = recorder.StageRun._reply

    def interrupted(self, patience, *kinds):
        if kinds == (recorder.FLUSHED,):  # Ctrl-C while the stage waits for its last calls
            raise KeyboardInterrupt
        return waited(self, patience, *kinds)

    monkeypatch.setattr(recorder.StageRun, "_reply", interrupted)
    with (
        pytest.raises(KeyboardInterrupt),
        recorder.recording("evaluate", _stage_tags(tmp_path), None) as run,
    ):
        run.log_params({"seed": 3})
    recorders_ended()
    runs = _stage_runs(uri)
    assert (runs["evaluate"].info.status, runs["pipeline"].info.status) == ("KILLED", "KILLED")


def test_a_stage_gone_before_its_run_opened_gets_it_ended_killed(
    tmp_path, monkeypatch, recorder_store
):
    import socket
    import subprocess
    import sys
    from multiprocessing.connection import Connection

    from pipeline.tracking import recorder

    uri = recorder_store
    ours, theirs = socket.socketpair()
    helper = subprocess.Popen(
        [sys.executable, "-m", "pipeline.tracking.recorder", str(theirs.fileno()), "1"],
        pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    connection = Connection(ours.detach())
    connection.send(("evaluate", _stage_tags(tmp_path), None))
    connection.close()  # the stage is gone before the recorder could say the run is open
    assert helper.wait(600) == 0
    stage = _stage_runs(uri)["evaluate"]
    assert stage.info.status == "KILLED"
    assert stage.data.tags["aepipe.ended_by"] == recorder.STAGE_DIED


def test_verify_names_runs_left_running_by_a_process_that_has_ended(
    tmp_path, monkeypatch, recorder_store
):
    """When every stage comes from DVC's run cache no stage sweeps them; verify must not then
    report that all is well."""
    import subprocess
    import sys

    import mlflow
    import psutil

    from pipeline.audit.verify import check_running
    from pipeline.tracking.finder import RunFinder
    from pipeline.tracking.tags import TAG_PROCESS, TAG_REPOSITORY

    uri = recorder_store
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("autoencoder")
    runs = RunFinder(client, experiment, uri)
    assert [finding.ok for finding in check_running(runs)] == [True]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = processes.process_identity(psutil.Process(dead.pid))
    dead.wait()
    tags = {TAG_PROCESS: identity, TAG_REPOSITORY: str(tmp_path), "dvc.stage": "evaluate"}
    orphan = client.create_run(experiment, tags=tags).info.run_id
    [finding] = check_running(runs)
    assert not finding.ok and finding.subject == f"MLflow run {orphan} (evaluate)"
    assert "`aepipe validate` marks it KILLED" in finding.message


def test_a_server_that_stops_mid_stage_fails_it_in_one_line_and_its_runs_end_later(
    tmp_path, monkeypatch
):
    """The stage gives up after a few quick retries (not MLflow's 4 minutes) with a line that
    says what happened; its runs, RUNNING on the server, are ended KILLED by the next sweep once
    the server is back."""
    import subprocess
    import sys

    import psutil

    from pipeline.core.entry import MLFLOW_PATIENCE
    from pipeline.tracking import runs
    from pipeline.tracking.recorder import recording
    from pipeline.tracking.tags import TAG_PROCESS

    assert int(MLFLOW_PATIENCE["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 3  # what stages use
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # the same path, sooner
    monkeypatch.chdir(tmp_path)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # the stage, later SIGKILLed
    tags = {
        **_stage_tags(tmp_path),
        TAG_PROCESS: processes.process_identity(psutil.Process(gone.pid)),
    }
    gone.wait()
    server = mlflow_server(tmp_path, port)
    try:
        with (
            pytest.raises(TrackingError, match=f"MLflow tracking server {uri} stopped answering"),
            recording("evaluate", tags, None) as run,
        ):
            run.confirm()
            stop_server(server)
            run.log_params({"seed": 3})
        recorders_ended()
        server = mlflow_server(tmp_path, port)
        before = _stage_runs(uri)
        assert {r.info.status for r in before.values()} == {"RUNNING"}
        assert sorted(runs.sweep_orphaned_runs()) == [before["evaluate"].info.run_id]
        after = _stage_runs(uri)
        assert {r.info.status for r in after.values()} == {"KILLED"}
    finally:
        if server.poll() is None:
            stop_server(server)


OPEN_WHEN_TOLD = """
import sys, time
from pathlib import Path
import mlflow  # imported first, so that every process opens the store at the same moment
from pipeline.tracking.store import open_client
ready, go, uri = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ready.touch()
while not go.exists():
    time.sleep(0.01)
open_client(uri).search_experiments()
"""


def test_processes_opening_a_new_sqlite_store_at_once_all_get_it(tmp_path, monkeypatch):
    """Two queued experiments in a fresh clone start their stages together; MLflow creates the
    schema on first use, and two creators at once failed with "table ... already exists"."""
    import subprocess
    import sys
    import time

    monkeypatch.chdir(tmp_path)  # the store lock sits beside the store, under .aepipe/
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_WHEN_TOLD, str(tmp_path / f"ready{i}"), str(go), uri],
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    while not all((tmp_path / f"ready{i}").exists() for i in range(4)):
        assert all(p.poll() is None for p in openers), [p.communicate()[1] for p in openers]
        time.sleep(0.05)
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in openers]
    assert [p.returncode for p in openers] == [0] * 4, errors[-1][-2000:]


def test_every_finished_cell_of_a_sweep_has_one_finished_pipeline_run(
    tmp_path, monkeypatch, empty_store
):
    """A cell whose stages were all restored from DVC's run cache ran none: it gets a run with
    its metrics; an attempt cut off between stages (left FINISHED) is marked KILLED."""
    import shutil

    from pipeline.tracking.sweeps import SweepRun

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    sweep, _ = SweepRun.open("lr", "spec", "0" * 40, 3)
    client = sweep.client

    def attempt(cell: str) -> str:
        tags = {"mlflow.parentRunId": sweep.run_id, "aepipe.role": "pipeline"}
        run = client.create_run(sweep.experiment_id, tags={**tags, "dvc.exp_name": cell})
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    cut_off, retried, ran = attempt("lr-1-seed0"), attempt("lr-1-seed0"), attempt("lr-2-seed0")
    sweep.settle_cells(
        {
            "lr-1-seed0": {},
            "lr-2-seed0": {},
            "lr-1-seed1": {"denoiser_on_noisy": {"psnr": 12.5, "ssim": float("nan")}},
        }
    )
    statuses = {r: client.get_run(r).info.status for r in (cut_off, retried, ran)}
    assert statuses == {cut_off: "KILLED", retried: "FINISHED", ran: "FINISHED"}
    [restored] = client.search_runs(
        [sweep.experiment_id], filter_string="tags.`dvc.exp_name` = 'lr-1-seed1'"
    )
    assert restored.info.status == "FINISHED"
    assert restored.data.tags["mlflow.parentRunId"] == sweep.run_id
    assert restored.data.metrics == {"denoiser_on_noisy.psnr": 12.5}
