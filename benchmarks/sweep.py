"""Benchmark: one sweep through DVC's queue on this machine, and through `aepipe sweep` on a Ray
instance on this machine, side by side.

    python benchmarks/sweep.py [--rounds 1] [--default-cell]      (or: make bench-sweep)

Setup, in a scratch directory: a clone of this repository with tiny-but-real params, reproduced,
its commit pushed to a bare git remote and its outputs and DVC run cache to a local DVC remote.
Each round runs a 2 x 3 sweep (two learning rates of the denoiser, never run before in this
benchmark, nor by the other way, over seeds 0 1 2) both ways, alternating which goes first:

- queue: `dvc exp run --queue` of the six experiments in the workspace, `dvc queue start -j 2`,
  until the six are done;
- sweep: `aepipe sweep` with a Ray instance over the machine's cores, one CPU per cell: clones,
  pulls, runs and pushes each experiment as a cell.

Prints the wall times, their ratio queue / sweep (at least 1: the Ray path is not slower), and the
per-cell phases the sweep reports (clone, run with its pull, push). With `--default-cell`, also
times one experiment of the default params (two side by side, as on a two-core worker), and
estimates from these figures a 4 x 5 sweep of the default params on 1, 4 and 16 two-core
machines. Nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
TINY = {
    "data": {"train_size": 2000, "test_size": 500, "tuning_size": 100},
    "evaluate": {"robustness_factors": [0.2, 0.6], "robustness_size": 200},
    "train_basic": {"epochs": 2},
    "train_denoise": {"epochs": 2},
}
PHASE = re.compile(r"\((clone [\d.]+ s, run [\d.]+ s, push [\d.]+ s)\)")
START = re.compile(r"sweep: \[\s*([\d.]+) s\] \d+ cells")  # when the first cell could start


def environment() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", "DVC_NO_ANALYTICS": "1"}


def sh(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr}")
    return result.stdout


def merge(base: dict, override: dict) -> dict:
    return {
        k: merge(base[k], v) if isinstance(v, dict) else v for k, v in {**base, **override}.items()
    }


def workspace(scratch: Path, env: dict[str, str]) -> Path:
    """A reproduced tiny repository whose commit and outputs are on its remotes."""
    repo = scratch / "repo"
    sh(["git", "clone", "-q", str(ROOT), str(repo)], scratch, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(params, TINY), sort_keys=False))
    sh(["git", "init", "-q", "--bare", str(scratch / "origin.git")], scratch, env)
    for command in (
        ["git", "config", "user.name", "aepipe bench"],
        ["git", "config", "user.email", "bench@aepipe.invalid"],
        ["git", "remote", "set-url", "origin", str(scratch / "origin.git")],
        ["dvc", "remote", "add", "--local", "-d", "-f", "bench", str(scratch / "dvc")],
        ["dvc", "repro", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "tiny params, reproduced"],
        ["git", "push", "-q", "-u", "origin", "HEAD:main"],
        ["dvc", "push", "-q", "--run-cache"],
    ):
        sh(command, repo, env)
    return repo


def learning_rates(round_: int, way: str) -> tuple[str, str]:
    """Two learning rates that no earlier round and not the other way ran, so that DVC's run
    cache answers for nothing (a sweep after the queue would otherwise restore every stage of
    the queue's experiments from the DVC remote)."""
    nudge = (2 * round_ + (way == "sweep") + 1) * 1e-7
    return f"{0.002 + nudge:.7f}", f"{0.003 + nudge:.7f}"


def through_queue(repo: Path, env: dict[str, str], rates: tuple[str, str], name: str) -> float:
    started = time.perf_counter()
    for setting, rate in enumerate(rates, start=1):
        for seed in SEEDS:
            sh(
                ["dvc", "exp", "run", "--queue", "-n", f"{name}-{setting}-seed{seed}",
                 "-S", f"seed={seed}", "-S", f"train_denoise.learning_rate={rate}"],
                repo, env,
            )  # fmt: skip
    sh(["dvc", "queue", "start", "-j", "2"], repo, env)
    while True:
        status = sh(["dvc", "queue", "status"], repo, env)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    sh(["python", "-m", "pipeline", "compare"], repo, env)  # the same result as a sweep's
    elapsed = time.perf_counter() - started
    mine = [line for line in status.splitlines() if f" {name}-" in line]
    if sum("Success" in line for line in mine) != 2 * len(SEEDS):
        raise SystemExit(f"the queued experiments did not all succeed:\n{status}")
    return elapsed  # no `dvc queue stop`: its shutdown would reach the next round's workers


def through_sweep(
    repo: Path, env: dict[str, str], rates: tuple[str, str], name: str
) -> tuple[float, list[str], float]:
    """(wall seconds, each cell's phases, seconds before the first cell could start)."""
    started = time.perf_counter()
    output = sh(
        ["python", "-m", "pipeline", "sweep", "--name", name,
         "--seeds", *map(str, SEEDS), "-S", f"train_denoise.learning_rate={','.join(rates)}"],
        repo, env,
    )  # fmt: skip
    start = START.search(output)
    return time.perf_counter() - started, PHASE.findall(output), float(start.group(1))


def phase_medians(lines: list[str]) -> dict[str, float]:
    found: dict[str, list[float]] = {}
    for line in lines:
        for phase, seconds in re.findall(r"(\w+) ([\d.]+) s", line):
            found.setdefault(phase, []).append(float(seconds))
    return {phase: statistics.median(values) for phase, values in found.items()}


def default_cell(scratch: Path, env: dict[str, str]) -> float:
    """Seconds of one default-params experiment while another runs beside it (two cores)."""
    clone = scratch / "default"
    sh(["git", "clone", "-q", str(ROOT), str(clone)], scratch, env)
    sh(["dvc", "repro", "-q", "baselines"], clone, env)  # what a sweep restores, not its cost
    for twin in (1, 2):
        sh(
            ["dvc", "exp", "run", "--queue", "-n", f"default-{twin}", "-S", f"seed={twin}"],
            clone,
            env,
        )
    started = time.perf_counter()
    sh(["dvc", "queue", "start", "-j", "2"], clone, env)
    while "Queued" in (s := sh(["dvc", "queue", "status"], clone, env)) or "Running" in s:
        time.sleep(5)
    elapsed = time.perf_counter() - started  # both ran at once: one cell's time, side by side
    if s.count("Success") != 2:
        raise SystemExit(f"the default-params experiments did not succeed:\n{s}")
    return elapsed


def estimate(cell_s: float, overhead_s: float, start_s: float) -> dict[int, float]:
    """Minutes for 4 x 5 = 20 default cells on N two-core machines, two cells per machine at a
    time (each as long as one beside another), plus the sweep's start."""
    cells = 4 * 5
    return {
        machines: (start_s + math.ceil(cells / (2 * machines)) * (cell_s + overhead_s)) / 60
        for machines in (1, 4, 16)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--default-cell", action="store_true")
    args = parser.parse_args()
    env = environment()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="aepipe-bench-sweep-") as scratch_dir:
        scratch = Path(scratch_dir)
        repo = workspace(scratch, env)
        queue_s, sweep_s, phases, starts = [], [], [], []
        for round_ in range(args.rounds):
            order = ["queue", "sweep"] if round_ % 2 == 0 else ["sweep", "queue"]
            for way in order:
                if way == "queue":
                    queue_s.append(
                        through_queue(repo, env, learning_rates(round_, way), f"q{round_}")
                    )
                else:
                    rates = learning_rates(round_, way)
                    seconds, lines, start = through_sweep(repo, env, rates, f"s{round_}")
                    sweep_s.append(seconds)
                    phases += lines
                    starts.append(start)
                print(f"round {round_ + 1}: {way} done", flush=True)
        queue, sweep = statistics.median(queue_s), statistics.median(sweep_s)
        per_cell = phase_medians(phases)
        print(f"2 x 3 sweep, tiny params, {args.rounds} round(s), medians:")
        print(f"  dvc queue start -j 2    {queue:7.1f} s   {queue_s}")
        print(f"  aepipe sweep (Ray)      {sweep:7.1f} s   {sweep_s}")
        print(f"  ratio queue / sweep     {queue / sweep:7.2f}   (>= 1: Ray path not slower)")
        print("  per cell (median): " + ", ".join(f"{k} {v:.1f} s" for k, v in per_cell.items()))
        start = statistics.median(starts)
        print(f"  sweep's start (push, Ray, node checks): {start:.1f} s")
        if args.default_cell:
            cell = default_cell(scratch, env)
            overhead = per_cell.get("clone", 0) + per_cell.get("push", 0)
            print(f"default-params cell, two side by side: {cell / 60:.1f} min")
            for machines, minutes in estimate(cell, overhead, start).items():
                print(f"  4 x 5 sweep of the defaults on {machines:2d} two-core machines: "
                      f"{minutes:5.1f} min (estimate)")  # fmt: skip


if __name__ == "__main__":
    main()
