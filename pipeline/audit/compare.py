"""`aepipe compare`: the experiments DVC knows, side by side, each with its MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.tracking.finder import RunFinder

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


def compare(
    root: Path, params: list[str] | None, metrics: list[str] | None, revs: list[str] | None = None
) -> list[dict[str, Any]]:
    from pipeline.core.config import load_params

    rows = experiment_rows(root, revs)
    all_params = list(load_params(root / "params.yaml").flat())
    chosen_params = params or changed_params(rows, all_params)
    return comparison(
        rows, chosen_params, list(metrics or DEFAULT_METRICS), RunFinder.open_existing()
    )
