"""`aepipe compare`: DVC experiments compared as configurations over seed replicates.

Experiments whose params differ only in `seed` are replicates of one configuration. For each
configuration and metric: n, mean, standard deviation and the 95% interval of the mean; against a
baseline configuration, the difference with its 95% interval and a verdict (`evaluation.
replicates`). `--experiments` shows the experiments one by one instead, with their MLflow runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.shell import git
from pipeline.tracking.finder import RunFinder

DEFAULT_METRICS = ("denoiser_on_noisy.psnr", "basic_on_clean.psnr", "noisy_input.psnr")
REPLICATE_METRICS = ("denoiser_on_noisy.psnr", "denoiser_on_noisy.ssim", "basic_on_clean.psnr")
UNFINISHED = {"Queued", "Running", "Failed"}
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


STALE = "params edited, not run"  # a workspace whose params.yaml is not what made its outputs


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


def experiment_params(root: Path, row: dict[str, Any]) -> dict[str, Any] | None:
    """The params an experiment row ran with, typed as in its params.yaml (DVC's table turns
    every number into a float and lists into text), or None if they no longer validate."""
    from pipeline.core.config import parse_params, read_yaml

    rev = row.get("rev")
    try:
        if rev == "workspace":
            text = (root / "params.yaml").read_text(encoding="utf-8")
        else:
            text = git("show", f"{rev}:params.yaml", cwd=root)
        return parse_params(read_yaml(text, f"{rev}:params.yaml")).flat()
    except (PipelineError, OSError, UnicodeDecodeError):
        return None


def training_code_paths(root: Path) -> list[str]:
    """The code the models are trained with: the training stages' `pipeline/` deps."""
    import yaml

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return sorted(
        {
            dep
            for stage in ("train_basic", "train_denoise")
            for dep in stages.get(stage, {}).get("deps", [])
            if dep.startswith("pipeline/")
        }
    )


def _workspace_ran_with(root: Path, flat: dict[str, Any]) -> bool:
    """Whether the workspace's outputs were made with its params.yaml: every stage in dvc.lock
    ran with the values params.yaml holds now (an edit not yet run makes its metrics another
    configuration's)."""
    import yaml

    try:
        stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
        recorded = {
            key: value
            for body in stages.values()
            for key, value in body.get("params", {}).get("params.yaml", {}).items()
        }
    except (OSError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return False
    return bool(recorded) and all(
        str(flat.get(key)) == str(value) for key, value in recorded.items()
    )


def _metric_value(value: Any) -> float | None:
    """A metric cell as a finite float; None for what is not one (DVC shows `!` for a metric it
    cannot read, e.g. outputs not in the local cache)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def replicate_frame(root: Path, rows: list[dict[str, Any]], metrics: list[str]):
    """One row per finished experiment with every metric a finite number: a pandas DataFrame
    with the columns experiment, rev, seed, group and key (the configuration), code (the
    training code, from dvc.lock's md5s), params and the metrics. The workspace counts only when
    its outputs were made with its params.yaml."""
    import pandas as pd

    from pipeline.tracking.tags import replicate_group, training_code

    code_paths = training_code_paths(root)
    records = []
    ordered = sorted(rows, key=lambda row: row.get("rev") == "workspace")  # workspace last
    for row in ordered:
        values = {metric: _metric_value(row.get(metric)) for metric in metrics}
        if row.get("State") in UNFINISHED or None in values.values():
            continue
        flat = experiment_params(root, row)
        if flat is None or (row.get("rev") == "workspace" and not _workspace_ran_with(root, flat)):
            continue
        group = replicate_group(flat)
        code = training_code({path: row.get(path) for path in code_paths})
        records.append(
            {
                "experiment": row.get("Experiment") or row.get("rev"),
                "rev": row.get("rev"),
                "seed": flat["seed"],
                "group": group,
                "code": code,
                "key": group,
                "params": flat,
                **values,
            }
        )
    columns = ["experiment", "rev", "seed", "group", "code", "key", "params", *metrics]
    frame = pd.DataFrame(records).reindex(columns=columns)
    return frame.astype(dict.fromkeys(metrics, float))


def baseline_key(frame, baseline: str | None) -> str:
    """The configuration of the named experiment (name, commit or `workspace`); by default that
    of the commit the experiments are based on."""
    if frame.empty:
        raise PipelineError("no finished experiment has these metrics; nothing to compare")
    if baseline is None:
        named = frame[frame["rev"] != "workspace"]
        return (named if not named.empty else frame).iloc[0]["key"]
    revs = frame["rev"].astype(str)
    same_commit = revs.map(
        lambda rev: len(baseline) >= 4 and (rev.startswith(baseline) or baseline.startswith(rev))
    )
    match = frame[(frame["experiment"] == baseline) | (revs == baseline) | same_commit]
    if match.empty:
        known = ", ".join(sorted(set(frame["experiment"])))
        raise PipelineError(
            f"--baseline {baseline}: no finished experiment or commit of that name; known: {known}"
        )
    return match.iloc[0]["key"]


def configuration_label(params: dict[str, Any], reference: dict[str, Any]) -> str:
    """The params (but seed) that differ from the baseline's, e.g. `model.kind=conv`."""
    changed = [
        f"{key}={value}"
        for key, value in params.items()
        if key != "seed" and value != reference.get(key)
    ]
    return ", ".join(changed) or "baseline"


def replicate_comparison(frame, metrics: list[str], baseline: str | None):
    """One row per configuration and metric: the summary over seeds and, against the baseline
    configuration, the difference and verdict. A pandas DataFrame. A configuration is the params
    but the seed (and those that change no score); one run per seed. A label ending in ` *` has
    runs trained by different code (any edit of a training stage's code deps)."""
    import pandas as pd

    from pipeline.evaluation import replicates

    base = baseline_key(frame, baseline)
    frame = frame.drop_duplicates(subset=["key", "seed"], keep="first")
    ref = frame[frame["key"] == base].sort_values("seed")
    reference = ref.iloc[0]["params"]
    keys = [base] + [key for key in dict.fromkeys(frame["key"]) if key != base]
    records = []
    for key in keys:
        members = frame[frame["key"] == key].sort_values("seed")
        label = configuration_label(members.iloc[0]["params"], reference)
        if members["code"].nunique() > 1:
            label = f"{label} *"
        for metric in metrics:
            values = dict(zip(members["seed"], members[metric], strict=True))
            summary = replicates.summarise(list(values.values()))
            record = {
                "configuration": label,
                "group": members.iloc[0]["group"],
                "code": " ".join(dict.fromkeys(members["code"])),
                "experiments": " ".join(members["experiment"]),
                "seeds": " ".join(str(seed) for seed in values),
                "metric": metric,
                "n": summary.n,
                "mean": summary.mean,
                "std": summary.std,
                "ci_low": summary.low,
                "ci_high": summary.high,
            }
            if key != base:
                ref_values = dict(zip(ref["seed"], ref[metric], strict=True))
                diff = replicates.difference(
                    values, ref_values, replicates.higher_is_better(metric)
                )
                record.update(
                    difference=diff.estimate,
                    diff_low=diff.low,
                    diff_high=diff.high,
                    test=diff.test,
                    verdict=_qualified(diff.verdict, metric, members, ref),
                )
            records.append(record)
    columns = ["difference", "diff_low", "diff_high", "test", "verdict"]
    return pd.DataFrame.from_records(records).reindex(
        columns=[*dict.fromkeys([*records[0], *columns])]
    )


def _qualified(verdict: str, metric: str, members, ref) -> str:
    """Scores measured on other test images, or on other noise, say only which way they went."""
    ours, theirs = members.iloc[0]["params"], ref.iloc[0]["params"]
    if ours["data.test_size"] != theirs["data.test_size"]:
        return OTHER_BENCHMARK.get(verdict, verdict) + " (other test images)"
    if _on_noisy_images(metric) and _benchmark(members) != _benchmark(ref):
        return OTHER_BENCHMARK.get(verdict, verdict) + " (other benchmark)"
    return verdict


# A higher PSNR on easier noise is not a better denoiser: across benchmarks, only the direction.
OTHER_BENCHMARK = {"better": "higher", "worse": "lower"}


def _on_noisy_images(metric: str) -> bool:
    return metric.split(".", 1)[0] in {"denoiser_on_noisy", "noisy_input", "denoisers"}


def _benchmark(members) -> tuple[Any, ...]:
    params = members.iloc[0]["params"]
    return params["noise.factor"], params["noise.seed"], params["data.test_size"]


def _number(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"  # NaN: not defined for one seed


def _interval(low: float, high: float) -> str:
    return "-" if low != low else f"[{low:.4f}, {high:.4f}]"


def replicate_markdown(table) -> str:
    """Two tables: each configuration over its seeds, then each against the baseline."""
    metrics = list(dict.fromkeys(table["metric"]))
    summary = ["| configuration | n | seeds | " + " | ".join(metrics) + " |"]
    summary.append("|" + " --- |" * (3 + len(metrics)))
    for _, rows in table.groupby("group", sort=False):
        label = rows.iloc[0]["configuration"]
        first = rows.iloc[0]
        cells = [
            f"{_number(r['mean'])} ± {_number(r['std'])} {_interval(r['ci_low'], r['ci_high'])}"
            for _, r in rows.iterrows()
        ]
        summary.append(f"| {label} | {first['n']} | {first['seeds']} | " + " | ".join(cells) + " |")
    lines = [
        "Each configuration over its seeds: mean ± standard deviation [95% interval of the mean]",
        "",
        *summary,
    ]
    if table["configuration"].str.endswith(" *").any():
        lines += [
            "",
            "* runs trained by different code (the md5s of the training stages' code in dvc.lock "
            "differ); pooling them assumes the code change did not change training",
        ]
    against = table[table["difference"].notna()]
    if not against.empty:
        lines += [
            "",
            "Against the baseline: difference of means [95% interval], and the verdict "
            "(each interval on its own: among 20 comparisons of configurations that truly do not "
            "differ, expect about one 'better' or 'worse' by chance)",
            "",
            "| configuration | metric | difference | 95% interval | test | verdict |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for _, r in against.iterrows():
            lines.append(
                f"| {r['configuration']} | {r['metric']} | {r['difference']:+.4f} | "
                f"{_interval(r['diff_low'], r['diff_high'])} | {r['test']} | {r['verdict']} |"
            )
    return "\n".join(lines) + "\n"


def replicate_figure(frame, table, path: Path) -> None:
    """Each metric's values per configuration (one dot per seed), with mean and 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(table["metric"]))
    labels = list(dict.fromkeys(table["configuration"]))
    keys = list(dict.fromkeys(table["group"]))
    frame = frame.drop_duplicates(subset=["key", "seed"], keep="first")
    figure, axes = plt.subplots(
        1, len(metrics), figsize=(4 * len(metrics), 0.6 * len(labels) + 1.6), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        for position, key in enumerate(keys):
            values = frame[frame["key"] == key][metric]
            ax.scatter(values, [position] * len(values), s=14, color="tab:blue", alpha=0.6)
            row = table[(table["group"] == key) & (table["metric"] == metric)].iloc[0]
            if row["n"] > 1:
                ax.errorbar(
                    row["mean"],
                    position,
                    fmt="none",
                    ecolor="black",
                    capsize=4,
                    xerr=[[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]],
                )
            ax.plot(row["mean"], position, marker="|", markersize=14, color="black")
        ax.set_yticks(range(len(labels)), labels if ax is axes[0][0] else [""] * len(labels))
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    figure.suptitle("per seed (dots), mean and 95% interval (bars)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


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
