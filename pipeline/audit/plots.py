"""`aepipe plots`: DVC's plots page (`dvc plots diff`) that renders without a network.

DVC's page loads its plotting library (Vega, Vega-Lite, vega-embed) from a CDN, and shows
nothing offline. This installs the same versions once with npm into `~/.cache/aepipe/js` (the npm
registry is the only network it needs, once), copies them beside the page and writes the page
from a template that loads them from there.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.shell import dvc, dvc_error
from pipeline.data.sources import cache_dir

# What DVC's own page loads (dvc_render/vega.py), file by file.
LIBRARIES = {
    "vega@5.20.2": "vega/build/vega.min.js",
    "vega-lite@5.2.0": "vega-lite/build/vega-lite.min.js",
    "vega-embed@6.18.2": "vega-embed/build/vega-embed.min.js",
}
TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>DVC plots</title>
{scripts_here}
    <style>table {{ border-spacing: 15px; }}</style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def libraries() -> Path:
    """The directory holding the plotting library (installed with npm on first use)."""
    where = cache_dir() / "js"
    if all((where / "node_modules" / file).is_file() for file in LIBRARIES.values()):
        return where
    npm = shutil.which("npm")
    if npm is None:
        raise PipelineError(
            "npm not found: install Node.js and npm (Debian: apt-get install npm) to draw the "
            "plots offline, or run `dvc plots diff` where the page can load its library online"
        )
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        # DVC's page pins versions whose declared peer ranges disagree (vega-lite 5.2 asks for
        # vega ^5.21, DVC ships 5.20): install them as DVC does, as they are.
        [npm, "install", "--prefix", str(where), "--no-audit", "--no-fund", "--legacy-peer-deps",
         *LIBRARIES],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        cause = next(
            (line for line in lines if "ERR" in line and "log of this run" not in line), None
        )
        raise PipelineError(f"npm install: {cause or (lines[-1] if lines else 'failed')}")
    return where


def page_template() -> str:
    scripts = "\n".join(
        f'    <script src="{Path(file).name}"></script>' for file in LIBRARIES.values()
    )
    return TEMPLATE.format(scripts_here=scripts)


def write_plots(root: Path, revisions: list[str], out: Path) -> Path:
    """DVC's plots page of `revisions` (none: the workspace against the last commit) in `out`,
    its library beside it; returns the page."""
    installed = libraries() / "node_modules"
    out.mkdir(parents=True, exist_ok=True)
    template = out / "template.html"
    template.write_text(page_template())
    for file in LIBRARIES.values():
        shutil.copyfile(installed / file, out / Path(file).name)
    result = dvc(
        "plots", "diff", *revisions, "--html-template", str(template), "-o", str(out), cwd=root
    )
    if result.returncode != 0:
        raise PipelineError(f"dvc plots diff: {dvc_error(result.stderr)}")
    template.unlink()
    return out / "index.html"
