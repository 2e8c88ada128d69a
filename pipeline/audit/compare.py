"""`aepipe compare`: the experiments DVC knows, side by side, each with its MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.tracking.finder import RunFinder
from pipeline.tracking.provenance import git

DEFAULT_METRICS = ("denoiser_on_noisy.psnr", "basic_on_clean.psnr", "noisy_input.psnr")
DENOISER = "models/denoise.keras"


def experiment_rows(root: Path, revs: list[str] | None = None) -> list[dict[str, Any]]:
    """The workspace and the experiments of HEAD (or of each of `revs`) as DVC shows them."""
    import dvc.api

    return dvc.api.exp_show(repo=str(root), revs=revs)


def changed_params(rows: list[dict[str, Any]], param_keys: list[str]) -> list[str]:
    """The params whose value differs between the rows, as `dvc exp show --only-changed`."""
    return [key for key in param_keys if len({repr(row.get(key)) for row in rows}) > 1]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def comparison(
    rows: list[dict[str, Any]], params: list[str], metrics: list[str], runs: RunFinder | None
) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        name = row.get("Experiment") or row.get("rev")
        link = "-"
        if runs and row.get(DENOISER):
            producing = runs.producing(DENOISER, row[DENOISER])
            link = producing[0]["link"] if producing else "-"
        table.append(
            {
                "experiment": name,
                "rev": row.get("rev"),
                "state": row.get("State") or "",
                **{key: row.get(key) for key in params + metrics},
                "mlflow_run": link,
            }
        )
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    if not table:
        return "no experiments\n"
    columns = [c for c in table[0] if c != "rev"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


def check_repository(root: Path, revs: list[str] | None) -> None:
    """DVC experiments are git commits: refuse, in one line, what has none to show."""
    if not (root / ".dvc").is_dir():
        raise PipelineError(f"{root}: not a DVC repository (run aepipe compare in the project)")
    if not git("rev-parse", "--verify", "--quiet", "HEAD", cwd=root, check=False).strip():
        raise PipelineError(
            f"{root}: no git commit yet; DVC experiments are commits, so commit the project first"
        )
    for rev in revs or []:
        if not git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=root, check=False):
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
        if key not in bookkeeping and key not in params and "/" not in key
    }


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
    return comparison(rows, chosen_params, chosen_metrics, RunFinder.open_existing())
