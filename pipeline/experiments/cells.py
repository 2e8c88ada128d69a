"""One cell of a sweep, as a Ray task runs it on a worker: a scratch clone of the git remote at
the sweep's commit, `dvc exp run --pull --allow-missing` of the cell's experiment (outputs and
DVC's run cache come from the shared DVC remote, through a DVC cache the node's cells share: a
stage that ran anywhere before is restored, not rerun), its outputs and run cache pushed to the
DVC remote, then its experiment ref to the git remote (in that order: a ref on the remote
always has its data), the clone removed.

The experiment runs under a supervisor process in a session of its own, which dies with the
worker: if the worker is killed (or its node lost), the supervisor ends the experiment's
processes and removes the clone, and Ray retries the cell elsewhere. A retried cell whose ref
reached the remote is not run again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pipeline.core import paths, processes
from pipeline.core.shell import DVC, GitError, dvc_error, git
from pipeline.experiments import sharing

DONE, FAILED, EARLIER = "done", "failed", "finished earlier"
STOP_GRACE_S = 30.0  # for the experiment's stages to end their MLflow runs when stopped
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# What a Ray worker's environment holds for Ray's own use, not for the experiment's processes.
RAY_SETS = frozenset({"PYTHONPATH", "PYTHONBREAKPOINT", "PYTHONDONTWRITEBYTECODE"})


@dataclass(frozen=True)
class Cell:
    name: str  # <sweep>-<setting>-seed<seed>: the DVC experiment's name
    setting: int  # 1-based index of its combination of -S values
    seed: int
    assignments: tuple[str, ...]  # the -S values of its setting, seed not included

    def command(self) -> list[str]:
        sets = [part for assignment in self.assignments for part in ("-S", assignment)]
        return [
            "exp", "run", "--pull", "--allow-missing", "-n", self.name,
            "-S", f"seed={self.seed}", *sets,
        ]  # fmt: skip


@dataclass(frozen=True)
class Shared:
    """What every cell needs, from the driver: where the code, data and runs are."""

    git_url: str
    commit: str
    dvc_remote: str
    tracking_uri: str
    sweep_run: str
    author: tuple[str, str]  # git user.name and user.email for the experiment's commit
    threads: dict[str, str | None] = field(default_factory=dict)  # the driver's thread settings


@dataclass
class Outcome:
    name: str
    status: str  # DONE, FAILED or EARLIER
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # clone, run, push
    node: str = ""


def experiment_ref(commit: str, name: str) -> str:
    """The git ref of DVC experiment `name` based on `commit`."""
    return f"refs/exps/{commit[:2]}/{commit[2:]}/{name}"


def remote_experiments(repo: Path, url: str) -> dict[str, str]:
    """Experiment name -> the commit it is based on, for every experiment the git remote `url`
    holds (refs/exps/<commit[:2]>/<commit[2:]>/<name>)."""
    found = {}
    for line in git("ls-remote", url, "refs/exps/*", cwd=repo).splitlines():
        parts = line.partition("\t")[2].split("/")
        if len(parts) == 5:
            found[parts[4]] = parts[2] + parts[3]
    return found


def run_cell(cell: Cell, shared: Shared) -> Outcome:
    """Run one cell; return what happened (a failing experiment is an outcome, not an error:
    only a lost worker makes Ray retry)."""
    import platform

    outcome = Outcome(cell.name, DONE, node=platform.node())
    scratch = Path(tempfile.mkdtemp(prefix=f"aepipe-sweep-{cell.name}-"))
    repo = scratch / "repo"
    try:
        with _timed(outcome, "clone"):
            git("clone", "--quiet", "--no-checkout", shared.git_url, str(repo), cwd=scratch)
            git("checkout", "--quiet", "--detach", shared.commit, cwd=repo)
        if remote_experiments(repo, shared.git_url).get(cell.name) == shared.commit:
            outcome.status = EARLIER  # an earlier attempt pushed it, then was lost
            return outcome
        _configure(repo, shared)
        with _timed(outcome, "run"):
            code, log = _supervised([*DVC, *cell.command()], repo, scratch, _environment(shared))
        if code != 0:
            outcome.status, outcome.reason = FAILED, _failure(log)
            return outcome
        outcome.metrics = json.loads((repo / paths.METRICS_FILE).read_text())
        with _timed(outcome, "push"):
            with sharing.project(repo, "push") as opened:  # data first, then the ref
                sharing.push(opened)
            ref = experiment_ref(shared.commit, cell.name)
            try:
                git("push", "--quiet", shared.git_url, f"{ref}:{ref}", cwd=repo)
            except GitError as exc:
                raise RuntimeError(_ref_refused(cell.name, exc.stderr)) from None
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ref_refused(name: str, stderr: str) -> str:
    said = [line.strip() for line in stderr.splitlines() if line.strip()] or ["failed"]
    if any("already exists" in line or "rejected" in line for line in said):
        return (
            f"git push: origin already holds an experiment named {name} (another sweep of this "
            "name ran it at the same time?); its results stand, this cell's were not pushed"
        )
    return f"git push of experiment {name}: {said[-1]}"


@contextlib.contextmanager
def _timed(outcome: Outcome, phase: str):
    started = time.monotonic()
    try:
        yield
    finally:
        outcome.seconds[phase] = time.monotonic() - started


def node_cache(tracking_uri: str) -> Path:
    """The DVC cache the cells of a node share (`~/.cache/aepipe/dvc-cache/<store>` there): what
    one cell pulled or made, a later one on the node finds without the remote, and a stage
    another cell ran here is restored from its run cache at once. One per tracking store: a
    stage restored from the run cache is only registered where its training run was logged.
    Objects are named by their md5 and written under a temporary name, so cells may write to it
    side by side; it can be deleted between sweeps."""
    import hashlib

    from pipeline.data.sources import cache_dir

    store = hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
    return cache_dir() / "dvc-cache" / store


def _configure(repo: Path, shared: Shared) -> None:
    """The shared DVC remote (in the clone's local config, which a clone never has), the node's
    cache, and the identity of the experiment's commit."""
    with sharing.project(repo, "config") as opened, opened.config.edit("local") as config:
        config.setdefault("remote", {})["sweep"] = {"url": shared.dvc_remote}
        config.setdefault("core", {})["remote"] = "sweep"
        config.setdefault("cache", {})["dir"] = str(node_cache(shared.tracking_uri))
    name, email = shared.author
    git("config", "user.name", name, cwd=repo)
    git("config", "user.email", email, cwd=repo)


def _environment(shared: Shared) -> dict[str, str]:
    """The worker's environment without what Ray set for itself, with the sweep's tracking store
    and run, and the driver's thread settings (Ray sets OMP_NUM_THREADS in its workers; results
    must not depend on it)."""
    from pipeline.tracking.tags import SWEEP_RUN_ENV

    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RAY_") and name not in RAY_SETS
    }
    environment.update(
        {
            # DVC runs the stages' `python -m ...` through a shell: this worker's Python first.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "MLFLOW_TRACKING_URI": shared.tracking_uri,
            SWEEP_RUN_ENV: shared.sweep_run,
            "DVC_NO_ANALYTICS": "1",
        }
    )
    for variable in THREAD_VARIABLES:
        environment.pop(variable, None)
        if (value := shared.threads.get(variable)) is not None:
            environment[variable] = value
    return environment


def _failure(log: str) -> str:
    """The cell's one-line reason: a stage's own error line, else DVC's."""
    errors = [line.strip() for line in log.splitlines() if ": error: " in line]
    stage_error = next((line for line in reversed(errors) if line.startswith("aepipe ")), None)
    return stage_error or dvc_error(log)


# The supervisor runs this module as the worker has it (shipped by the driver), not the clone's.
SUPERVISOR = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from pipeline.experiments.cells import supervise; "
    "raise SystemExit(supervise(int(sys.argv[2]), sys.argv[3], sys.argv[4:]))"
)


def _supervised(
    command: list[str], repo: Path, scratch: Path, environment: dict[str, str]
) -> tuple[int, str]:
    """Run `command` in `repo` under a supervisor that dies with this worker; return (status,
    output)."""
    import pipeline

    log_file = scratch / "cell.log"
    shipped = str(Path(pipeline.__file__).parent.parent)  # this module's copy of the package
    supervisor = [
        sys.executable, "-c", SUPERVISOR, shipped, str(os.getpid()), str(scratch), *command
    ]  # fmt: skip
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            supervisor,
            cwd=repo,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its group: the experiment's processes, and nothing else
            preexec_fn=functools.partial(processes.die_with_parent, os.getpid(), signal.SIGTERM),
        )
        try:
            while (code := _poll(process)) is None:
                pass
        except BaseException:  # the sweep is cancelled (Ray raises KeyboardInterrupt here)
            process.send_signal(signal.SIGTERM)
            process.wait()
            raise
    return code, log_file.read_text(errors="replace")


def _poll(process: subprocess.Popen) -> int | None:
    """Its exit status, after waiting a moment: short waits, so that Ray's cancellation (an
    exception raised between two Python steps) reaches this task at once."""
    try:
        return process.wait(0.5)
    except subprocess.TimeoutExpired:
        return None


def supervise(worker: int, scratch: str, command: list[str]) -> int:
    """The supervisor: run `command` in this process group; on SIGTERM (the worker died, or the
    cell was cancelled) end the group, the stages first with SIGTERM (they end their MLflow
    runs KILLED), and remove the scratch clone if the worker is gone."""
    child = subprocess.Popen(command)

    def stop(signum: int, frame: object) -> None:
        for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(handled, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)  # our group: the experiment's processes
        _, alive = psutil.wait_procs(_group_members(), timeout=STOP_GRACE_S)
        for member in alive:
            with contextlib.suppress(psutil.Error):
                member.kill()
        if os.getppid() != worker:  # nobody else will clean up after this cell
            shutil.rmtree(scratch, ignore_errors=True)
        os._exit(130)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    if os.getppid() != worker:  # the worker died before the handlers were in place
        stop(signal.SIGTERM, None)
    return child.wait()


def _group_members() -> list[psutil.Process]:
    """The processes of this process group but this one."""
    group, me = os.getpgrp(), os.getpid()
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if process.pid != me and os.getpgid(process.pid) == group:
                members.append(process)
    return members


def probe_node(shared: Shared, markers: dict[str, str]) -> list[str]:
    """On one node, before any cell starts: what a cell there could not reach. `markers`:
    what -> a file the driver wrote where that place is shared (a local DVC remote, a SQLite
    store): found on this node only if it sees the same filesystem."""
    import importlib.util
    import urllib.request

    problems = []
    if not shutil.which("git"):
        problems.append("has no `git` on PATH")
    if importlib.util.find_spec("dvc") is None:
        problems.append("has no DVC in its Python (install the project's requirements.lock)")
    elif subprocess.run(["git", "ls-remote", shared.git_url], capture_output=True).returncode:
        problems.append(f"cannot read the git remote {shared.git_url}")
    for what, marker in markers.items():
        if not Path(marker).is_file():
            problems.append(f"does not see the {what} {Path(marker).parent} (not a shared path)")
    if shared.tracking_uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{shared.tracking_uri.rstrip('/')}/health", timeout=5):
                pass
        except OSError as exc:
            problems.append(f"cannot reach the tracking server {shared.tracking_uri} ({exc})")
    return problems
