"""`aepipe docs`: every figure the pipeline produces that README.md and docs/ quote, written from
the outputs themselves, so that no number in the documents is pasted by hand.

A quoted figure lives in a block between `<!-- generated: NAME -->` and `<!-- /generated -->`.
`aepipe docs` rewrites every block from the outputs (the small ones are committed to git beside
`dvc.lock`: metrics, tables, histories), the params schema and the package's source;
`aepipe docs --check` rewrites nothing and names each block that differs. The tests run the check
on the committed documents against the committed outputs.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.shell import git

DOCUMENTS = ("README.md", "docs/*.md")
BLOCK = re.compile(
    r"(?P<head><!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<tail><!-- /generated -->)",
    re.S,
)
# The train loss per epoch the tutorial reports (its basic model on clean images, then the same
# model trained on noisy images), against which this pipeline is measured.
TUTORIAL_LOSSES = {
    "train_basic": (0.2034, 0.1229, 0.1013, 0.0900, 0.0836, 0.0801, 0.0780, 0.0767, 0.0758, 0.0752),
    "train_denoise": (
        0.1071, 0.1015, 0.1003, 0.0997, 0.0994, 0.0991, 0.0989, 0.0988, 0.0986, 0.0985,
    ),
}  # fmt: skip
PARTS_EXPLAINED = {
    "core": "params schema, paths, errors, files, processes, how a command starts and ends "
    "(warm or cold)",
    "data": "MNIST's hashes and sources, checked array files, the splits, the seeded noise",
    "artifacts": "files stages hand each other: histories, baseline results, .keras archives",
    "evaluation": "metrics, classical denoisers, probes, the evaluation cores, figures, replicates",
    "modelling": "TensorFlow: architectures, the compiled training loop, workers, model files",
    "tracking": "MLflow: store, stage runs and the recorder, lookups, registry, sweeps' runs",
    "audit": "aepipe lineage, verify, compare, docs",
    "ops": "aepipe server (the team's tracking server on PostgreSQL), aepipe host (the stage host)",
    "experiments": "aepipe replicate, sweep (with its cells on Ray), restore",
    "stages": "one thin module per DVC stage",
}


@dataclass(frozen=True)
class Outputs:
    """Where the quoted files are read: the workspace, or a git revision of it."""

    root: Path
    revision: str | None = None

    def text(self, path: str) -> str:
        if self.revision is None:
            try:
                return (self.root / path).read_text(encoding="utf-8")
            except OSError as exc:
                raise PipelineError(f"{path}: {exc.strerror}; run `dvc repro` first") from None
        shown = git("show", f"{self.revision}:{path}", cwd=self.root, check=False)
        if not shown:
            raise PipelineError(f"{path}: not in git at {self.revision}")
        return shown

    def rows(self, path: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.text(path))))

    def metrics(self) -> dict[str, Any]:
        return json.loads(self.text("reports/metrics.json"))

    def source_files(self) -> dict[str, str]:
        """path -> text of each module of the package."""
        if self.revision is None:
            files = sorted((self.root / "pipeline").rglob("*.py"))
            return {f.relative_to(self.root).as_posix(): f.read_text() for f in files}
        listed = git("ls-tree", "-r", "--name-only", self.revision, "pipeline", cwd=self.root)
        return {p: self.text(p) for p in sorted(listed.split()) if p.endswith(".py")}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def tutorial_losses(outputs: Outputs) -> str:
    """Train loss per epoch: the tutorial's, and this pipeline's default run's."""
    header = ["epoch", *(str(epoch) for epoch in range(1, 11))]
    rows, largest = [], 0.0
    for stage, label in (("train_basic", "basic"), ("train_denoise", "denoising")):
        ours = [float(row["loss"]) for row in outputs.rows(f"reports/{stage}/history.csv")]
        reference = TUTORIAL_LOSSES[stage]
        largest = max([largest, *(abs(a - b) for a, b in zip(ours, reference, strict=False))])
        rows.append([f"{label}, tutorial", *(f"{value:.4f}" for value in reference)])
        rows.append([f"{label}, here", *(f"{value:.4f}" for value in ours)])
    return _table(header, rows) + f"\nLargest difference in any epoch: {largest:.4f}.\n"


def test_metrics(outputs: Outputs) -> str:
    """The test metrics of both models and of the noisy input, `reports/metrics.json`."""
    metrics = outputs.metrics()
    groups = (
        ("basic_on_clean", "basic model, clean input"),
        ("denoiser_on_noisy", "denoiser, noisy input"),
        ("noisy_input", "the noisy input itself"),
    )
    rows = [
        [
            label,
            f"{metrics[group]['bce']:.4f}",
            f"{metrics[group]['mse']:.4f}",
            f"{metrics[group]['psnr']:.2f}",
            f"{metrics[group]['ssim']:.3f}",
        ]
        for group, label in groups
    ]
    return _table(["", "BCE", "MSE", "PSNR (dB)", "SSIM"], rows)


def denoisers(outputs: Outputs) -> str:
    """Every denoiser of the default run on its test set, best first, `reports/denoisers.csv`."""
    rows = []
    for row in outputs.rows("reports/denoisers.csv"):
        tuned = f"{row['parameter']} {float(row['value']):g}" if row.get("parameter") else "-"
        psnr, ssim = float(row["psnr"]), float(row["ssim"])
        rows.append([row["method"].replace("_", " "), f"{psnr:.2f}", f"{ssim:.3f}", tuned])
    return _table(["method", "PSNR (dB)", "SSIM", "tuned on held-out images"], rows)


def probes(outputs: Outputs) -> str:
    """The linear probe's test accuracy on each kind of feature, `reports/metrics.json`."""
    names = {
        "basic_codes": "the basic model's codes",
        "denoiser_codes": "the denoiser's codes",
        "raw_pixels": "the 784 raw pixels",
    }
    accuracy = outputs.metrics()["probe_accuracy"]
    rows = [
        [names.get(name, name.replace("pca_", "PCA, ") + " components"), f"{value:.4f}"]
        for name, value in sorted(accuracy.items(), key=lambda item: -item[1])
    ]
    return _table(["features", "test accuracy"], rows)


def params_table(outputs: Outputs) -> str:
    """Every key of params.yaml with its type, allowed values, default and meaning."""
    from pipeline.core.config import parse_params, read_yaml
    from pipeline.core.params_table import params_table as table

    return table(parse_params(read_yaml(outputs.text("params.yaml"), "params.yaml")))


def layout(outputs: Outputs) -> str:
    """The package's parts, in import order, with their modules."""
    modules: dict[str, list[str]] = {}
    for path in outputs.source_files():
        parts = Path(path).parts
        part = parts[1] if len(parts) > 2 else Path(parts[1]).stem
        name = Path(path).stem
        if name not in ("__init__", "__main__") and len(parts) > 2:
            modules.setdefault(part, []).append(f"`{name}`")
    rows = [
        [f"`{part}/`", what, ", ".join(modules.get(part, []))]
        for part, what in PARTS_EXPLAINED.items()
    ]
    rows.append(["`cli.py`", "`aepipe`: the stages and the commands above", ""])
    return _table(["part", "what", "modules"], rows)


BLOCKS: dict[str, Callable[[Outputs], str]] = {
    "tutorial-losses": tutorial_losses,
    "test-metrics": test_metrics,
    "denoisers": denoisers,
    "probes": probes,
    "params-table": params_table,
    "layout": layout,
}


def documents(root: Path) -> list[Path]:
    return [path for pattern in DOCUMENTS for path in sorted(root.glob(pattern))]


def rewritten(text: str, outputs: Outputs, where: str) -> str:
    """`text` with every generated block written afresh."""

    def block(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise PipelineError(f"{where}: no generated block is called {name!r}")
        return match["head"] + BLOCKS[name](outputs) + match["tail"]

    return BLOCK.sub(block, text)


def differing(text: str, outputs: Outputs, where: str) -> list[str]:
    """The names of the blocks of `text` that differ from what the outputs give."""
    fresh = {m["name"]: m["body"] for m in BLOCK.finditer(rewritten(text, outputs, where))}
    return [m["name"] for m in BLOCK.finditer(text) if fresh[m["name"]] != m["body"]]


def update(root: Path, check: bool = False, revision: str | None = None) -> list[str]:
    """Rewrite the generated blocks of every document (with `check`, only say which differ);
    return one line per document changed or differing."""
    outputs = Outputs(root, revision)
    found = []
    for path in documents(root):
        where = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8") if revision is None else outputs.text(where)
        if check:
            found += [f"{where}: block {name} differs" for name in differing(text, outputs, where)]
            continue
        fresh = rewritten(text, outputs, where)
        if fresh != text:
            path.write_text(fresh, encoding="utf-8")
            found.append(f"{where}: rewritten")
    return found
