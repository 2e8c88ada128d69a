"""Experiments as configurations: which finished experiments are replicates of one
configuration (their params differ only in `seed` and in params that change no score), and, per
configuration and metric, the summary over seeds and the difference to a baseline configuration
with its verdict (`evaluation.replicates`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.core import paths
from pipeline.core.errors import PipelineError
from pipeline.core.shell import git

UNFINISHED = {"Queued", "Running", "Failed"}
STALE = "params edited, not run"  # a workspace whose params.yaml is not what made its outputs


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
            for stage in paths.TRAINING_STAGES
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
