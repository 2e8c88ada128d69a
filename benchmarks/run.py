"""Benchmark: the pipeline against the tutorial's Keras script, training alone and end to end.

    python benchmarks/run.py [--repeats 3]      (or: make bench)

1. Training: alternates the tuned reference (`benchmarks/tutorial_reference.py tuned`: float32,
   silent `fit`) and the pipeline's stages (`aepipe train basic`, `aepipe train denoise`) on the
   same prepared data and default params, `--repeats` times each, in fresh processes. Prints
   seconds per epoch (median of epochs 2-10 of both fits, i.e. without the first epoch's
   tracing), images per second, their ratio, peak memory, and the largest per-epoch loss
   difference.
2. End to end, in a fresh clone: every stage run alone, cold (no stage host) and warm (through
   `aepipe host start`): wall time, fixed cost of a training stage (wall time minus its epochs)
   and peak memory of all the stage's processes. Then `--repeats` rounds, each running in turn
   the tutorial's script as written (float64, `fit` with its progress bar), the tuned script,
   and, cold then warm, `dvc repro --force` on the defaults and an experiment iteration (`dvc exp
   run -S train_denoise.epochs=12`, with a learning rate nudged by 1e-9 per run so that DVC's
   run cache cannot answer for it); then a no-op `dvc repro`. Prints the medians and the ratios
   script / pipeline (above 1: the pipeline is faster).
Speed targets are read from this output, never asserted in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGES_PER_EPOCH = 30_000
EPOCH_LINE = re.compile(r"^(train_\w+): epoch \d+/\d+ .*\(([\d.]+) s\)$")
SAMPLE_S = 0.05


def measured(
    command: list[str], cwd: Path, env: dict[str, str], host: int | None = None
) -> tuple[float, float, str]:
    """Run `command`; return (wall seconds, peak memory in MB, stdout). The peak is of the sum of
    the proportional set sizes (PSS: each shared page split among the processes that share it)
    of every process of the command and, with `host`, of the stage host's children (the stages
    it runs), sampled every 50 ms."""
    import psutil

    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        root = psutil.Process(process.pid)
        peak = 0
        while process.poll() is None:
            tree = [root]
            with contextlib.suppress(psutil.Error):
                tree += root.children(recursive=True)
                if host is not None:
                    tree += psutil.Process(host).children(recursive=True)
            peak = max(peak, sum(proportional_size(member.pid) for member in tree))
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stdout}\n{stderr}")
    return wall, peak / 2**20, stdout


def proportional_size(pid: int) -> int:
    """A process's PSS in bytes (Linux), 0 if it has ended."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pipeline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        TF_CPP_MIN_LOG_LEVEL="3",
        DVC_NO_ANALYTICS="1",
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, **(extra or {})}


def steady(seconds: list[float]) -> float:
    return statistics.median(seconds[1:])


def run_reference(env: dict[str, str], variant: str = "tuned", cwd: Path = ROOT) -> dict:
    wall, peak, out = measured(
        [sys.executable, str(ROOT / "benchmarks/tutorial_reference.py"), variant], cwd, env
    )
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "epoch_s": steady(result["basic_seconds"]) / 2 + steady(result["denoise_seconds"]) / 2,
        "loss": result["basic_loss"] + result["denoise_loss"],
        "peak_mb": peak,
        "wall_s": wall,
    }


def run_pipeline(workspace: Path, env: dict[str, str]) -> dict:
    seconds: dict[str, list[float]] = {}
    losses: list[float] = []
    peaks, walls = [], []
    for model in ("basic", "denoise"):
        wall, peak, out = measured(["aepipe", "train", model], workspace, env)
        peaks.append(peak)
        walls.append(wall)
        for line in out.splitlines():
            if match := EPOCH_LINE.match(line):
                seconds.setdefault(match[1], []).append(float(match[2]))
        history = (workspace / f"reports/train_{model}/history.csv").read_text().splitlines()
        losses += [float(row.split(",")[1]) for row in history[1:]]
    epoch_s = statistics.mean(steady(values) for values in seconds.values())
    return {"epoch_s": epoch_s, "loss": losses, "peak_mb": max(peaks), "wall_s": sum(walls)}


def training_workspace(scratch: Path) -> Path:
    """The repo's prepared data and params, in a directory where training may write freely."""
    workspace = scratch / "train"
    (workspace / "data").mkdir(parents=True)
    for name in ("prepared", "noisy"):
        (workspace / "data" / name).symlink_to(ROOT / "data" / name)
    shutil.copy(ROOT / "params.yaml", workspace / "params.yaml")
    return workspace


def compare_training(repeats: int, scratch: Path) -> dict:
    env = pipeline_env()
    subprocess.run(["dvc", "repro", "noise"], cwd=ROOT, env=env, check=True, capture_output=True)
    workspace = training_workspace(scratch)
    tracked = pipeline_env({"MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}"})
    references, pipelines = [], []
    for i in range(repeats):
        references.append(run_reference(env))
        pipelines.append(run_pipeline(workspace, tracked))
        print(
            f"  round {i + 1}: reference {references[-1]['epoch_s']:.3f} s/epoch, "
            f"pipeline {pipelines[-1]['epoch_s']:.3f} s/epoch",
            flush=True,
        )
    reference = statistics.median(r["epoch_s"] for r in references)
    ours = statistics.median(p["epoch_s"] for p in pipelines)
    loss_diff = max(
        abs(a - b)
        for r, p in zip(references, pipelines, strict=True)
        for a, b in zip(r["loss"], p["loss"], strict=True)
    )
    return {
        "reference_epoch_s": reference,
        "pipeline_epoch_s": ours,
        "reference_peak_mb": max(r["peak_mb"] for r in references),
        "pipeline_peak_mb": max(p["peak_mb"] for p in pipelines),
        "reference_wall_s": statistics.median(r["wall_s"] for r in references),
        "max_loss_diff": loss_diff,
    }


def stage_commands(repo: Path) -> dict[str, list[str]]:
    """Each stage's command as `dvc.yaml` gives it, in pipeline order."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {name: shlex.split(body["cmd"]) for name, body in stages.items()}


def start_host(repo: Path, env: dict[str, str]) -> tuple[int, float]:
    """`aepipe host start` in `repo`: (the host's pid, seconds until it was up)."""
    started = time.perf_counter()
    subprocess.run(["aepipe", "host", "start"], cwd=repo, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    status = subprocess.run(
        ["aepipe", "host", "status"], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout
    if "start warm" not in status:
        raise SystemExit(f"the stage host does not serve {repo}: {status}")
    return int(re.search(r"\(pid (\d+)", status).group(1)), seconds


def stage_row(command: list[str], repo: Path, env: dict[str, str], host: int | None) -> dict:
    """One stage run alone: wall seconds, peak MB, and for a training stage its fixed cost (wall
    time minus its epochs)."""
    wall, peak, out = measured(command, repo, env, host)
    epochs = [float(match[2]) for line in out.splitlines() if (match := EPOCH_LINE.match(line))]
    return {"wall_s": wall, "peak_mb": peak, "fixed_s": wall - sum(epochs) if epochs else None}


def end_to_end(scratch: Path, repeats: int) -> dict:
    """Every stage alone, then `repeats` alternating rounds of the reference scripts and of the
    forced run and the iteration, each cold (no stage host) and warm (through one)."""
    clone = scratch / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    cold = pipeline_env({"AEPIPE_HOST": "off"})
    warm = pipeline_env({"AEPIPE_HOST": "on", "AEPIPE_HOST_DIR": str(scratch / "hosts")})
    subprocess.run(["dvc", "repro"], cwd=clone, env=cold, check=True, capture_output=True)
    host, host_start_s = start_host(clone, warm)
    stages = {
        name: {
            "cold": stage_row(command, clone, cold, None),
            "warm": stage_row(command, clone, warm, host),
        }
        for name, command in stage_commands(clone).items()
    }
    rounds = []
    peaks: dict[str, float] = {}
    for i in range(repeats):
        times = {
            "as_written": run_reference(cold, "as-written", clone)["wall_s"],
            "tuned": run_reference(cold, "tuned", clone)["wall_s"],
        }
        for mode, env in (("cold", cold), ("warm", warm)):
            attached = host if mode == "warm" else None
            times[f"repro_{mode}"], peaks[mode], _ = measured(
                ["dvc", "repro", "--force"], clone, env, attached
            )
            reproduced_lock = (clone / "dvc.lock").read_text()  # what the iteration starts from
            # A learning rate never run before, so that DVC's run cache cannot answer for it.
            nudge = 2 * i + (1 if mode == "cold" else 2)
            nudged = f"train_denoise.learning_rate={0.001 + nudge * 1e-9!r}"
            iteration = ["dvc", "exp", "run", "-S", "train_denoise.epochs=12", "-S", nudged]
            times[f"iteration_{mode}"] = measured(iteration, clone, env, attached)[0]
            subprocess.run(["git", "checkout", "-q", "--", "params.yaml"], cwd=clone)
            (clone / "dvc.lock").write_text(reproduced_lock)
            subprocess.run(["dvc", "checkout", "-q", "--force"], cwd=clone, env=cold, check=True)
        rounds.append(times)
        print(f"  round {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    noop = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=clone, env=cold, check=True, capture_output=True)
        noop.append(time.perf_counter() - started)
    subprocess.run(["aepipe", "host", "stop"], cwd=clone, env=warm, check=True, capture_output=True)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return {
        "stages": stages,
        "rounds": rounds,
        "median": median,
        "repro_peak_mb": peaks,
        "noop_repro_s": statistics.median(noop),
        "host_start_s": host_start_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        print(f"training, {args.repeats} alternating rounds:", flush=True)
        train = compare_training(args.repeats, scratch)
        print("end to end, fresh clone:", flush=True)
        e2e = end_to_end(scratch, args.repeats)

    ratio = train["reference_epoch_s"] / train["pipeline_epoch_s"]
    print("\n| training, batch 64, 30,000 images | reference (Keras fit) | pipeline | ratio |")
    print("| --- | --- | --- | --- |")
    print(
        f"| seconds per epoch (median, epochs 2-10) | {train['reference_epoch_s']:.3f} | "
        f"{train['pipeline_epoch_s']:.3f} | {ratio:.2f}x |"
    )
    print(
        f"| images per second | {IMAGES_PER_EPOCH / train['reference_epoch_s']:,.0f} | "
        f"{IMAGES_PER_EPOCH / train['pipeline_epoch_s']:,.0f} | {ratio:.2f}x |"
    )
    print(
        f"| peak memory (MB) | {train['reference_peak_mb']:.0f} | "
        f"{train['pipeline_peak_mb']:.0f} | |"
    )
    print(f"| largest per-epoch loss difference | | {train['max_loss_diff']:.4f} | |")

    print(
        "\n| stage (run alone, defaults) | seconds cold | warm | fixed cost cold | warm "
        "| peak memory cold (MB) | warm |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, row in e2e["stages"].items():
        cold, warm = row["cold"], row["warm"]
        fixed = (
            f"{cold['fixed_s']:.1f} | {warm['fixed_s']:.1f}" if cold["fixed_s"] is not None else "|"
        )
        print(
            f"| {name} | {cold['wall_s']:.1f} | {warm['wall_s']:.1f} | {fixed} "
            f"| {cold['peak_mb']:.0f} | {warm['peak_mb']:.0f} |"
        )
    m = e2e["median"]
    print(f"\n| end to end, median of {args.repeats} alternating rounds | cold | warm |")
    print("| --- | --- | --- |")
    print(f"| the tutorial's script as written (float64, progress bar) | {m['as_written']:.1f} | |")
    print(f"| the tutorial's script tuned (float32, silent fit, XLA) | {m['tuned']:.1f} | |")
    print(
        f"| `dvc repro --force`, defaults, every stage | {m['repro_cold']:.1f} "
        f"| {m['repro_warm']:.1f} |"
    )
    print(
        f"| iteration: `dvc exp run -S train_denoise.epochs=12` | {m['iteration_cold']:.1f} "
        f"| {m['iteration_warm']:.1f} |"
    )
    peaks = e2e["repro_peak_mb"]
    print(
        f"| peak memory of `dvc repro --force`, all its processes (MB) | {peaks['cold']:.0f} "
        f"| {peaks['warm']:.0f} |"
    )
    print(f"| `dvc repro` with nothing to do | {e2e['noop_repro_s']:.2f} | |")
    print(
        f"| `aepipe host start` (once; then it serves every stage) | | {e2e['host_start_s']:.1f} |"
    )
    print(
        "\n| ratio: the script as written / the pipeline (target) | cold | warm |\n"
        "| --- | --- | --- |"
    )
    for name, target in (("repro", ">= 0.67"), ("iteration", ">= 1.5")):
        print(
            f"| {name} ({target}) | {m['as_written'] / m[name + '_cold']:.2f} "
            f"| {m['as_written'] / m[name + '_warm']:.2f} |"
        )


if __name__ == "__main__":
    main()
