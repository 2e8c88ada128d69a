"""What `aepipe compare` prints and draws: the experiments table, the configurations' summary
and differences as markdown, and the figure of every seed's score."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def markdown(table: list[dict[str, Any]]) -> str:
    if not table:
        return "no experiments\n"
    columns = [c for c in table[0] if c != "rev"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


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
