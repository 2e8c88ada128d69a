"""`aepipe sweep`: every combination of `-S` lists times every seed, one DVC experiment per cell,
fanned out as Ray tasks over a cluster (or over this machine's cores), each cell an ordinary
experiment on the git remote with its outputs on the DVC remote and its runs on the tracking
server, nested under one MLflow run of the sweep; at the end, the comparison of its
configurations (`aepipe compare`'s table), printed and logged to that run.

Before any cell starts: every cell's params are checked as DVC will apply them (all or
nothing); the workspace must be clean and its commit pushed; the git remote, the DVC remote and
the tracking store are resolved here and checked from every node of the cluster (a path only
this machine sees is refused). The commit's outputs are pushed to the DVC remote, so cells
restore what ran before instead of rerunning it.

Running the same sweep again runs only the cells whose experiment is not on the git remote.
Ctrl-C cancels the cells, ends their MLflow runs, and says which cells finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import interrupts
from pipeline.core.entry import runs_the_code_here
from pipeline.core.errors import ParamsError, PipelineError, one_line
from pipeline.core.progress import Report
from pipeline.core.shell import GitError, commit_of, git
from pipeline.experiments.cells import (
    DONE,
    EARLIER,
    FAILED,
    THREAD_VARIABLES,
    Cell,
    Outcome,
    Shared,
    experiment_ref,
    probe_node,
    remote_experiments,
    run_cell,
)
from pipeline.experiments.overrides import check_name, settings, validated

RETRIES = 3  # a cell whose worker dies (killed, node lost) runs again, up to this often
CANCEL_GRACE_S = 45.0  # for cancelled cells to stop their experiments


@dataclass(frozen=True)
class Plan:
    name: str
    commit: str
    cells: tuple[Cell, ...]

    @property
    def spec(self) -> str:
        """What makes a sweep this sweep: its commit and its cells."""
        cells = [[c.name, c.seed, list(c.assignments)] for c in self.cells]
        text = json.dumps([self.commit, cells])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_name(sweep: str, setting: int, seed: int) -> str:
    return f"{sweep}-{setting}-seed{seed}"


def plan(root: Path, name: str, seeds: list[int], assignments: list[str]) -> Plan:
    """Every cell, each validated as DVC will run it; a refusal names the cell and the key."""
    check_name(name)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ParamsError("--seeds: give distinct seeds, e.g. --seeds 0 1 2")
    if any(a.partition("=")[0].lstrip("+~") == "seed" for a in assignments):
        raise ParamsError("-S seed=...: the seeds are given with --seeds")
    cells = []
    for setting, combination in enumerate(settings(assignments), start=1):
        for seed in seeds:
            cell = Cell(cell_name(name, setting, seed), setting, seed, tuple(combination))
            validated(root / "params.yaml", combination, seed, f"cell {cell.name}")
            cells.append(cell)
    commit = commit_of("HEAD", root)
    if not commit:
        raise PipelineError(f"{root}: no git commit to sweep; commit and push the project first")
    return Plan(name, commit, tuple(cells))


def _resolved_url(root: Path, url: str) -> str:
    """A git or DVC remote URL as every worker can use it: a relative path made absolute."""
    if "://" in url or re.match(r"^[\w.-]+@[\w.-]+:", url) or Path(url).is_absolute():
        return url
    return str((root / Path(url).expanduser()).resolve())


def _origin(root: Path) -> str:
    url = git("remote", "get-url", "origin", cwd=root, check=False).strip()
    if not url:
        raise PipelineError(
            "no git remote `origin`: cells clone the sweep's commit from it "
            "(git remote add origin URL; a path every worker reaches, or any URL git clones)"
        )
    return _resolved_url(root, url)


def _check_pushed(root: Path, commit: str) -> None:
    dirty = git("status", "--porcelain", cwd=root, check=False).split("\n")
    changed = sorted({line[3:].strip() for line in dirty if line.strip()})
    if changed:
        shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
        raise PipelineError(
            f"uncommitted changes ({shown}): a sweep runs the pushed commit, not the workspace; "
            "commit and push them first"
        )
    with _reaching_origin(root):
        git("fetch", "--quiet", "origin", cwd=root)
    on_remote = git(
        "for-each-ref", "--contains", commit, "--format=%(refname)", "refs/remotes/origin",
        cwd=root, check=False,
    ).strip()  # fmt: skip
    if not on_remote:
        raise PipelineError(
            f"commit {commit[:7]} is not on origin: push it first (git push origin HEAD)"
        )


def _dvc_remote(root: Path) -> str:
    """The URL of the DVC remote this workspace uses (also one set only in .dvc/config.local),
    as DVC resolves it here."""
    from dvc.repo import Repo

    config = Repo(str(root)).config
    name = config["core"].get("remote")
    if not name or name not in config["remote"]:
        raise PipelineError(
            "no default DVC remote: cells take their inputs from it and push their outputs to "
            "it (dvc remote add -d NAME URL: S3, or a path every worker reaches)"
        )
    return _resolved_url(root, str(config["remote"][name]["url"]))


def _tracking_uri(root: Path) -> str:
    from pipeline.tracking.store import check_uri, configured_uri

    uri, _ = configured_uri()
    check_uri(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def _author(root: Path) -> tuple[str, str]:
    name = git("config", "user.name", cwd=root, check=False).strip()
    email = git("config", "user.email", cwd=root, check=False).strip()
    return name or "aepipe sweep", email or "sweep@aepipe.invalid"


def shared_context(root: Path, commit: str) -> Shared:
    """What every cell needs, checked here first (before any node is asked)."""
    git_url = _origin(root)
    _check_pushed(root, commit)
    return Shared(
        git_url=git_url,
        commit=commit,
        dvc_remote=_dvc_remote(root),
        tracking_uri=_tracking_uri(root),
        sweep_run="",
        author=_author(root),
        threads={variable: os.environ.get(variable) for variable in THREAD_VARIABLES},
    )


@contextlib.contextmanager
def outputs_pushed(root: Path) -> Iterator[None]:
    """The commit's outputs and DVC's run cache pushed to the remote, so that cells restore
    them: the push runs while the block starts the cluster, and is complete when it ends."""
    pushing = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "push"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield
    finally:
        _, stderr = pushing.communicate()  # whatever happened in the block: never left running
    if pushing.returncode != 0:
        said = [line for line in stderr.splitlines() if line.strip()] or ["dvc push: failed"]
        raise PipelineError(
            f"{said[-1].removeprefix('aepipe push: error: ')} (the cells take the commit's "
            "outputs from the DVC remote)"
        )


def _markers(shared: Shared, nonce: str) -> dict[str, Path]:
    """A file in each local place that every node must share (written here, looked for there)."""
    places = {}
    if "://" not in shared.dvc_remote and ":" not in shared.dvc_remote.split("/")[0]:
        places["DVC remote"] = Path(shared.dvc_remote)
    elif shared.dvc_remote.startswith("file://"):
        places["DVC remote"] = Path(shared.dvc_remote.removeprefix("file://"))
    if shared.tracking_uri.startswith("sqlite:///"):
        places["SQLite tracking store"] = Path(
            shared.tracking_uri.removeprefix("sqlite:///")
        ).parent
    return {what: place / f".aepipe-sweep-probe-{nonce}" for what, place in places.items()}


class Cluster:
    """The Ray cluster the sweep runs on: joined at `address`, or started on this machine."""

    def __init__(self, address: str | None):
        import logging

        import ray

        import pipeline
        from pipeline.evaluation.parallel import usable_cores

        self.ray = ray
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        # The code that runs a cell on a worker is this one, shipped with the sweep; the
        # stages run the commit's, in the cell's clone.
        settings: dict[str, Any] = {
            "logging_level": logging.ERROR,
            "log_to_driver": False,
            "runtime_env": {"py_modules": [str(Path(pipeline.__file__).parent)]},
        }
        try:
            if self.address:
                ray.init(address=self.address, **settings)
            else:  # a new instance, never one that happens to run here
                ray.init(
                    address="local", num_cpus=usable_cores(), include_dashboard=False, **settings
                )
        except Exception as exc:
            raise PipelineError(
                f"cannot join the Ray cluster at {self.address} ({one_line(exc)})"
            ) from None

    def shutdown(self) -> None:
        self.ray.shutdown()

    def nodes(self) -> list[dict]:
        return [node for node in self.ray.nodes() if node.get("Alive")]

    def check_cpus(self, cpus: int) -> None:
        largest = max((node["Resources"].get("CPU", 0) for node in self.nodes()), default=0)
        if cpus > largest:
            raise PipelineError(
                f"--cpus-per-run {cpus}: no node of the cluster has that many CPUs "
                f"(the largest has {largest:g}); a cell would wait forever"
            )

    def probe(self, shared: Shared) -> None:
        """Ask every node whether it reaches the git remote, the DVC remote and the tracking
        store; refuse in one line naming the first that does not."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nonce = secrets.token_hex(8)
        markers = _markers(shared, nonce)
        for marker in markers.values():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(nonce)
        try:
            task = self.ray.remote(num_cpus=0)(probe_node)
            checks = {
                node["NodeManagerAddress"]: task.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                ).remote(shared, {what: str(path) for what, path in markers.items()})
                for node in self.nodes()
            }
            problems = {node: self.ray.get(check) for node, check in checks.items()}
        finally:
            for marker in markers.values():
                marker.unlink(missing_ok=True)
        for node, found in problems.items():
            if found:
                raise PipelineError(
                    f"node {node} {found[0]}: every worker needs the git remote, the DVC remote "
                    "(S3, or a shared path) and the tracking store (a server, or a shared path)"
                )

    def run(
        self, cells: list[Cell], shared: Shared, cpus: int, report: Callable[[Outcome], None]
    ) -> list[Outcome]:
        """Run the cells as Ray tasks; on Ctrl-C cancel them and wait until they stopped."""
        task = self.ray.remote(max_retries=RETRIES)(run_cell)
        pending = {
            task.options(num_cpus=cpus, name=cell.name).remote(cell, shared): cell for cell in cells
        }
        outcomes = []
        try:
            while pending:
                ready, _ = self.ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    cell = pending.pop(ref)
                    try:
                        outcome = self.ray.get(ref)
                    except self.ray.exceptions.RayError as exc:
                        outcome = Outcome(cell.name, FAILED, reason=_ray_error(exc))
                    outcomes.append(outcome)
                    report(outcome)
        except KeyboardInterrupt:
            with interrupts.held():
                self._cancel(list(pending))
            raise
        return outcomes

    def _cancel(self, refs: list) -> None:
        for ref in refs:
            self.ray.cancel(ref, force=False)  # a KeyboardInterrupt in the task: it stops its cell
        _, late = self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        for ref in late:
            self.ray.cancel(ref, force=True)


def _ray_error(exc: Exception) -> str:
    """A cell's failure as one line: the error raised in the task, or how its worker died."""
    cause = getattr(exc, "cause", None)
    if type(cause) is RuntimeError:  # the cell's own words (dvc or git, and what to do)
        return one_line(cause)
    if cause is not None:
        return f"{type(cause).__name__}: {one_line(cause)}"
    text = one_line(exc)
    if "WorkerCrashedError" in type(exc).__name__ or "died" in text:
        return f"its worker died {RETRIES + 1} times ({text})"
    return text


def fetch_experiments(root: Path, found: dict[str, str]) -> None:
    """Experiments of the git remote (name -> baseline commit) into this clone: their refs,
    which hold their params and metrics (the small outputs are in git), so that `dvc exp show`
    and `aepipe compare` see them; `dvc exp pull` brings their other outputs if wanted."""
    refs = [experiment_ref(commit, name) for name, commit in found.items()]
    if not refs:
        return
    try:
        git("fetch", "--quiet", "origin", *(f"+{ref}:{ref}" for ref in refs), cwd=root)
    except GitError as exc:
        raise PipelineError(f"git fetch origin: {exc.said}") from None


@contextlib.contextmanager
def _reaching_origin(root: Path) -> Iterator[None]:
    """One line naming the git remote when git cannot reach it."""
    try:
        yield
    except GitError as exc:
        raise PipelineError(
            f"cannot reach the git remote origin ({_origin(root)}): {exc.said}"
        ) from None


def sweep_cells_on_remote(root: Path, name: str) -> dict[str, str]:
    """The experiments of sweep `name` on the git remote: experiment -> baseline commit."""
    pattern = re.compile(rf"{re.escape(name)}-\d+-seed\d+")
    with _reaching_origin(root):
        found = remote_experiments(root, _origin(root))
    return {exp: commit for exp, commit in found.items() if pattern.fullmatch(exp)}


def first_cell(names: list[str]) -> str:
    """The sweep's baseline: its first setting's first seed (`NAME-1-seed<lowest>`)."""

    def order(name: str) -> tuple[int, int]:
        setting, _, seed = name.rpartition("-seed")
        return int(setting.rpartition("-")[2]), int(seed)

    return min(names, key=order)


def pulled_sweep(root: Path, name: str) -> tuple[list[str], list[str]]:
    """The experiments of sweep `name` on the git remote, pulled into this clone where missing:
    (their names, the commits they are based on)."""
    check_name(name, "--sweep")
    found = sweep_cells_on_remote(root, name)
    if not found:
        raise PipelineError(f"--sweep {name}: origin holds no experiment of a sweep of that name")
    fetch_experiments(root, found)
    return sorted(found), sorted(set(found.values()))


def _comparison_files(
    root: Path, sweep: Plan, names: list[str], scratch: Path
) -> tuple[str, list[Path]]:
    """The comparison of the sweep's configurations: markdown to print, files to log."""
    from pipeline.audit import compare, tables

    baseline = first_cell(names)
    frame, table = compare.compare_replicates(
        root, None, baseline, [sweep.commit], names=set(names)
    )
    rendered = {
        "md": tables.replicate_markdown(table),
        "csv": table.to_csv(index=False),
        "json": table.to_json(orient="records", indent=2) + "\n",
    }
    files = []
    for kind, text in rendered.items():
        files.append(scratch / f"comparison.{kind}")
        files[-1].write_text(text)
    files.append(scratch / "comparison.png")
    tables.replicate_figure(frame, table, files[-1])
    return rendered["md"], files


def run_sweep(
    root: Path,
    name: str,
    seeds: list[int],
    assignments: list[str],
    address: str | None,
    cpus: int,
    report: Report,
) -> int:
    """Run a sweep; return 0 if every cell ended with its experiment on the git remote."""
    from pipeline.tracking.sweeps import SweepRun

    if cpus < 1:
        raise ParamsError(f"--cpus-per-run {cpus}: give at least 1")
    runs_the_code_here(root)
    sweep = plan(root, name, seeds, assignments)
    shared = shared_context(root, sweep.commit)
    on_remote = sweep_cells_on_remote(root, name)
    other = sorted({commit for commit in on_remote.values() if commit != sweep.commit})
    if other:
        raise PipelineError(
            f"a sweep named {name} exists on origin, based on commit {other[0][:7]}; "
            "choose another --name"
        )
    earlier = [cell.name for cell in sweep.cells if cell.name in on_remote]
    todo = [cell for cell in sweep.cells if cell.name not in on_remote]
    outcomes: list[Outcome] = []
    if not todo:  # every cell's experiment is on origin: nothing to start
        run, _ = SweepRun.open(name, sweep.spec, sweep.commit, len(sweep.cells))
        report(f"{len(sweep.cells)} cells, all on origin already: nothing to run")
        return _conclude(root, sweep, run, earlier, outcomes, report)
    SweepRun.refuse_conflicts(name, sweep.spec)
    cluster: Cluster | None = None
    try:
        with outputs_pushed(root):
            cluster = Cluster(address)
        cluster.check_cpus(cpus)
        cluster.probe(shared)
        run, resumed = SweepRun.open(name, sweep.spec, sweep.commit, len(sweep.cells))
        shared = dataclasses.replace(shared, sweep_run=run.run_id)
        where = f"the Ray cluster at {cluster.address}" if cluster.address else "this machine"
        report(
            f"{len(sweep.cells)} cells, {len(earlier)} on origin already, {len(todo)} to run "
            f"on {where}; MLflow: {run.link()}" + (" (resumed)" if resumed else "")
        )
        started = time.monotonic()

        def finished(outcome: Outcome) -> None:
            outcomes.append(outcome)
            report(_outcome_line(outcome, time.monotonic() - started))

        try:
            cluster.run(todo, shared, cpus, finished)
        except KeyboardInterrupt:
            with interrupts.held():
                run.end_cell_runs("aepipe sweep: cancelled")
                run.end("KILLED", [], [])
            done = earlier + [o.name for o in outcomes if o.status in (DONE, EARLIER)]
            report(
                f"cancelled; on origin: {', '.join(done) or 'none'}; run the same command "
                "again to run the others"
            )
            raise
    finally:
        if cluster is not None:
            cluster.shutdown()
    return _conclude(root, sweep, run, earlier, outcomes, report)


def _conclude(
    root: Path, sweep: Plan, run, earlier: list[str], outcomes: list[Outcome], report: Report
) -> int:
    """Pull the sweep's experiments here, print and log their comparison, end the sweep's run;
    0 if every cell's experiment is on origin."""
    done = earlier + [o.name for o in outcomes if o.status in (DONE, EARLIER)]
    failed = [o.name for o in outcomes if o.status == FAILED]
    ended = run.end_cell_runs("aepipe sweep: its cell ended")
    run.settle_cells({o.name: o.metrics for o in outcomes if o.status == DONE})
    fetch_experiments(root, {name: sweep.commit for name in done})
    with tempfile.TemporaryDirectory(prefix="aepipe-sweep-") as scratch:
        files: list[Path] = []
        if done:
            table, files = _comparison_files(root, sweep, done, Path(scratch))
            print(table, end="")
        run.end("FAILED" if failed else "FINISHED", files, failed)
    report(
        f"{len(done)} of {len(sweep.cells)} cells on origin"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + f"; comparison logged to {run.link()}"
        + (f"; {ended} run(s) left RUNNING marked KILLED" if ended else "")
    )
    return 1 if failed else 0


def _outcome_line(outcome: Outcome, elapsed: float) -> str:
    if outcome.status == FAILED:
        return f"{outcome.name}: failed: {outcome.reason}"
    if outcome.status == EARLIER:
        return f"{outcome.name}: on origin already (an earlier attempt pushed it)"
    phases = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in outcome.seconds.items())
    psnr = outcome.metrics.get("denoiser_on_noisy", {}).get("psnr")
    score = f": denoiser PSNR {psnr:.2f} dB" if isinstance(psnr, int | float) else ""
    return f"{outcome.name} done on {outcome.node} ({phases}){score} [{elapsed:.0f} s]"
