"""`aepipe compare`: DVC experiments compared as configurations over seed replicates.

Experiments whose params differ only in `seed` are replicates of one configuration. For each
configuration and metric: n, mean, standard deviation and the 95% interval of the mean; against a
baseline configuration, the difference with its 95% interval and a verdict
(`audit.configurations`, `evaluation.replicates`). `--experiments` shows the experiments one by
one instead, with their MLflow runs. What is printed is drawn by `audit.tables`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.audit.configurations import (
    STALE,
    UNFINISHED,
    _workspace_ran_with,
    replicate_comparison,
    replicate_frame,
)
from pipeline.core.errors import PipelineError
from pipeline.core.shell import commit_of
from pipeline.tracking.finder import RunFinder

DEFAULT_METRICS = ("denoiser_on_noisy.psnr", "basic_on_clean.psnr", "noisy_input.psnr")
REPLICATE_METRICS = ("denoiser_on_noisy.psnr", "denoiser_on_noisy.ssim", "basic_on_clean.psnr")
DENOISER = "models/denoise.keras"


def experiment_rows(root: Path, revs: list[str] | None = None) -> list[dict[str, Any]]:
    """The workspace and the experiments of HEAD (or of each of `revs`) as DVC shows them."""
    import dvc.api

    return dvc.api.exp_show(repo=str(root), revs=revs)


def changed_params(rows: list[dict[str, Any]], param_keys: list[str]) -> list[str]:
    """The params whose value differs between the rows, as `dvc exp show --only-changed`."""
    return [key for key in param_keys if len({repr(row.get(key)) for row in rows}) > 1]


def comparison(
    rows: list[dict[str, Any]],
    params: list[str],
    metrics: list[str],
    runs: RunFinder | None,
    stale_workspace: bool = False,
) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        name = row.get("Experiment") or row.get("rev")
        state = row.get("State") or ""
        if stale_workspace and row.get("rev") == "workspace":
            state = STALE
        link = "-"
        if runs and row.get(DENOISER) and state != STALE:
            link = _training_run_link(runs, row[DENOISER], row.get("Experiment") or "")
        table.append(
            {
                "experiment": name,
                "rev": row.get("rev"),
                "state": state,
                **{key: row.get(key) for key in params},
                # DVC shows the workspace's metrics for queued, running and failed experiments,
                # and the last run's for an edited workspace
                **{
                    key: None if state in UNFINISHED or state == STALE else row.get(key)
                    for key in metrics
                },
                "mlflow_run": link,
            }
        )
    return table


def _training_run_link(runs: RunFinder, md5: str, experiment: str) -> str:
    """The run that trained this experiment's denoiser. Experiments that share a model file
    (their params differ after training) each link their own run; one whose training came from
    DVC's run cache links the run that made the file, saying for which experiment."""
    producing = runs.producing(DENOISER, md5)
    own = [run for run in producing if run["dvc_experiment"] == experiment]
    if own:
        return own[0]["link"]
    if not producing:
        return "-"
    made_for = producing[0]["dvc_experiment"] or "a dvc repro"
    return f"{producing[0]['link']} (trained for {made_for})"


def check_repository(root: Path, revs: list[str] | None) -> None:
    """DVC experiments are git commits: refuse, in one line, what has none to show."""
    if not (root / ".dvc").is_dir():
        raise PipelineError(f"{root}: not a DVC repository (run aepipe compare in the project)")
    if not commit_of("HEAD", root):
        raise PipelineError(
            f"{root}: no git commit yet; DVC experiments are commits, so commit the project first"
        )
    for rev in revs or []:
        if not commit_of(rev, root):
            raise PipelineError(f"--rev {rev}: no such commit in {root}")


def check_columns(chosen: list[str], known: set[str], kind: str) -> None:
    unknown = [key for key in chosen if key not in known]
    if unknown:
        raise PipelineError(
            f"unknown {kind} {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def metric_keys(rows: list[dict[str, Any]], params: set[str]) -> set[str]:
    """The metric columns of the experiment rows: what is neither a param, a dependency path
    nor DVC's own bookkeeping."""
    bookkeeping = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}
    return {
        key
        for row in rows
        for key in row
        if key not in bookkeeping and key not in params and not _is_path(key)
    }


def _is_path(key: str) -> bool:
    """Dependency columns of DVC's table: paths such as `data/raw` or `params.yaml`."""
    return "/" in key or key.endswith((".yaml", ".yml", ".json", ".py", ".keras", ".csv"))


def compare(
    root: Path, params: list[str] | None, metrics: list[str] | None, revs: list[str] | None = None
) -> list[dict[str, Any]]:
    from pipeline.core.config import load_params

    check_repository(root, revs)
    all_params = list(load_params(root / "params.yaml").flat())
    if params:
        check_columns(params, set(all_params), "--param")
    rows = experiment_rows(root, revs)
    chosen_metrics = list(metrics or DEFAULT_METRICS)
    if metrics:
        check_columns(metrics, metric_keys(rows, set(all_params)), "--metric")
    chosen_params = params or changed_params(rows, all_params)
    workspace = load_params(root / "params.yaml").flat()
    return comparison(
        rows,
        chosen_params,
        chosen_metrics,
        RunFinder.open_existing(),
        stale_workspace=not _workspace_ran_with(root, workspace),
    )


def compare_replicates(
    root: Path,
    metrics: list[str] | None,
    baseline: str | None,
    revs: list[str] | None = None,
    names: set[str] | None = None,
):
    """(runs frame, comparison table) for the experiments of HEAD or of `revs` (only those named
    in `names`, when given)."""
    from pipeline.core.config import load_params

    check_repository(root, revs)
    all_params = set(load_params(root / "params.yaml").flat())
    rows = experiment_rows(root, revs)
    if names is not None:
        rows = [row for row in rows if row.get("Experiment") in names]
    if metrics:
        check_columns(metrics, metric_keys(rows, all_params), "--metric")
    chosen = list(dict.fromkeys(metrics or REPLICATE_METRICS))
    for metric in chosen:
        texts = {v for row in rows if isinstance(v := row.get(metric), str) and v != "!"}
        if texts:
            raise PipelineError(f"--metric {metric}: not a number (values: {', '.join(texts)})")
    frame = replicate_frame(root, rows, chosen)
    return frame, replicate_comparison(frame, chosen, baseline)


def check_figure_path(path: Path) -> None:
    """Refuse, before any work, a figure path that cannot be written as a PNG."""
    if path.suffix.lower() != ".png":
        raise PipelineError(f"--figure {path}: give a .png path")
    if path.is_dir() or not path.parent.is_dir():
        raise PipelineError(f"--figure {path}: not a file in an existing directory")
