"""`aepipe`: the pipeline's stages and the commands that audit and operate it, behind one command.

Errors a user can fix end as one line on stderr and exit status 2; Ctrl-C / SIGTERM exit 130.
This is the only module that imports the stage modules.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.core import params_guard
from pipeline.core.config import load_params
from pipeline.core.entry import run_command
from pipeline.core.errors import PipelineError

# Each runs `pipeline.stages.<name>.run`, the module DVC runs as `python -m pipeline.stages.<name>`.
STAGE_COMMANDS = {
    "fetch": "stage fetch: raw MNIST into data/raw/",
    "prepare": "stage prepare: subset, flatten, scale",
    "noise": "stage noise: Gaussian noise for the denoiser",
    "baselines": "stage baselines: classical denoisers, pixel probes",
    "train": "stages train_basic / train_denoise",
    "evaluate": "stage evaluate: metrics and figures",
    "register": "stage register: registry version if PSNR improves",
}


def _stage(name: str) -> Callable[[argparse.Namespace], None]:
    """A handler that validates the params file, then runs `pipeline.stages.<name>.run`."""

    def handler(args: argparse.Namespace) -> None:
        params = load_params(args.params)
        params_guard.remember(args.params, params)
        run = importlib.import_module(f"pipeline.stages.{name}").run
        if name == "train":
            run(params, args.model)
        else:
            run(params)

    return handler


def _validate(args: argparse.Namespace) -> None:
    from pipeline.tracking.runs import sweep_orphaned_runs

    params = load_params(args.params)
    print(f"{args.params}: valid ({len(params.flat())} params)")
    if ended := sweep_orphaned_runs():
        print(f"marked KILLED {len(ended)} MLflow run(s) whose process had ended")


def _docs(args: argparse.Namespace) -> int:
    from pipeline.audit.documents import update
    from pipeline.core.paths import repository_root

    lines = update(repository_root(), check=args.check)
    for line in lines:
        print(line)
    if args.check and lines:
        print("run `aepipe docs` to write them from the outputs", file=sys.stderr)
        return 1
    if not lines:
        print("every generated block is as the outputs say")
    return 0


def _plots(args: argparse.Namespace) -> None:
    from pipeline.audit.plots import write_plots
    from pipeline.core.paths import repository_root

    page = write_plots(repository_root(), args.revisions, args.out)
    print(f"open {page} (it needs no network)")


def _lineage(args: argparse.Namespace) -> None:
    import json

    from pipeline.audit.lineage import lineage_of, render
    from pipeline.core.paths import repository_root

    found = lineage_of(args.target, repository_root())
    print(
        json.dumps(found, indent=2) if args.json else render(found), end="\n" if args.json else ""
    )


def _verify(args: argparse.Namespace) -> int:
    from pipeline.audit.verify import verify
    from pipeline.core.paths import repository_root

    findings = verify(repository_root())
    for finding in findings:
        print(finding)
    problems = sum(not finding.ok for finding in findings)
    print(f"{problems} problem(s) in {len(findings)} checks")
    return 1 if problems else 0


def _compare(args: argparse.Namespace) -> None:
    import json

    from pipeline.audit import compare, tables
    from pipeline.core.paths import repository_root

    root = repository_root()
    if args.param and not args.experiments:
        raise PipelineError("--param chooses columns of --experiments; add --experiments")
    if args.sweep and (args.experiments or args.rev):
        raise PipelineError("--sweep chooses the experiments itself; drop --experiments and --rev")
    if args.experiments:
        table = compare.compare(root, args.param, args.metric, args.rev)
        text = json.dumps(table, indent=2, default=str) if args.format == "json" else None
        print(text or tables.markdown(table), end="")
        return
    if args.figure:
        compare.check_figure_path(args.figure)
    names, revs = None, args.rev
    if args.sweep:
        from pipeline.experiments.sweep import first_cell, pulled_sweep

        found, revs = pulled_sweep(root, args.sweep)
        names = set(found)
        args.baseline = args.baseline or first_cell(found)  # as the sweep's own table
    frame, table = compare.compare_replicates(root, args.metric, args.baseline, revs, names)
    rendered = {
        "md": tables.replicate_markdown(table),
        "csv": table.to_csv(index=False),
        "json": table.to_json(orient="records", indent=2) + "\n",
    }
    print(rendered[args.format], end="")
    if args.figure:
        tables.replicate_figure(frame, table, args.figure)
    if args.log:
        import tempfile

        from pipeline.tracking.comparisons import log_comparison

        with tempfile.TemporaryDirectory() as scratch:
            files = [Path(scratch) / f"comparison.{kind}" for kind in rendered]
            for file, text in zip(files, rendered.values(), strict=True):
                file.write_text(text)
            files.append(Path(scratch) / "comparison.png")
            tables.replicate_figure(frame, table, files[-1])
            baseline = table.iloc[0]["experiments"]
            link = log_comparison(files, list(frame["experiment"]), baseline)
        print(f"logged to MLflow: {link}", file=sys.stderr)


def _replicate(args: argparse.Namespace) -> None:
    from pipeline.core.paths import repository_root
    from pipeline.experiments.replicate import queue_replicates

    names = queue_replicates(repository_root(), args.seeds, args.set or [], args.name)
    print(f"queued {len(names)} experiments: {' '.join(names)}")
    print("run them with: dvc queue start -j 2; then: aepipe compare")


def _sweep(args: argparse.Namespace) -> int:
    from pipeline.core import progress
    from pipeline.core.paths import repository_root
    from pipeline.experiments.sweep import run_sweep

    return run_sweep(
        repository_root(),
        args.name,
        args.seeds,
        args.set or [],
        args.address,
        args.cpus_per_run,
        progress.printer("sweep"),
    )


def _server(args: argparse.Namespace) -> None:
    from pipeline.core import paths
    from pipeline.ops import server

    config = server.ServerConfig(
        state_dir=args.dir or paths.repository_root() / paths.STATE_DIR / "server",
        port=args.port,
        db_port=args.db_port,
        listen=args.host,
    )
    if args.action == "start":
        seconds, already = server.start(config)
        state = "was already running" if already else f"is up ({seconds:.1f} s)"
        print(f"MLflow tracking server on PostgreSQL {state}. Use it with:")
        print(f"  export MLFLOW_TRACKING_URI={config.uri}")
    elif args.action == "stop":
        for line in server.stop(config):
            print(line)
    else:
        print(server.status(config))


def _host(args: argparse.Namespace) -> None:
    from pipeline.ops import host

    if args.action == "start":
        print(host.start(args.idle))
    elif args.action == "stop":
        print(host.stop())
    else:
        print(host.status())


def _restore(args: argparse.Namespace) -> None:
    from pipeline.core.paths import repository_root
    from pipeline.experiments.workspace import restore

    for line in restore(repository_root()):
        print(line)


def _push(args: argparse.Namespace) -> None:
    from pipeline.core.paths import repository_root
    from pipeline.experiments import sharing

    root = repository_root()
    try:
        with sharing.project(root, "push") as opened:
            sent = sharing.push(opened, args.remote)
    except RuntimeError as exc:
        raise PipelineError(str(exc)) from None
    print(f"{sent} file(s) sent: outputs, run cache and the outputs its entries name")


def port_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aepipe", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file (default: params.yaml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int | None], help_text: str):
        # argparse formats help with %, not descriptions: "95%" must be "95%%" only in `help`.
        command = commands.add_parser(
            name, help=help_text.replace("%", "%%"), description=help_text
        )
        command.set_defaults(handler=handler)
        return command

    add(
        "validate",
        _validate,
        "check params.yaml against the schema; end MLflow runs a killed process left RUNNING",
    )
    docs = add(
        "docs",
        _docs,
        "write the figures README.md and docs/ quote from the outputs (params, metrics, tables)",
    )
    docs.add_argument(
        "--check", action="store_true", help="write nothing; name the blocks that differ"
    )
    plots = add(
        "plots", _plots, "DVC's plots page of some revisions or experiments, readable offline"
    )
    plots.add_argument(
        "revisions",
        nargs="*",
        metavar="REV",
        help="commits or experiments (none: the workspace against the last commit)",
    )
    plots.add_argument("-o", "--out", type=Path, default=Path("dvc_plots"), help="(dvc_plots)")
    lineage = add("lineage", _lineage, "how a model, DVC output or MLflow run was made")
    lineage.add_argument("target", help="a file (e.g. models/denoise.keras) or an MLflow run id")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    add("verify", _verify, "re-hash outputs and MLflow artifacts against dvc.lock")
    compare = add(
        "compare",
        _compare,
        "DVC experiments as configurations over seeds: mean, 95% interval, verdict",
    )
    compare.add_argument(
        "--metric",
        action="append",
        metavar="KEY",
        help="a metric (repeatable; default: the denoiser's PSNR and SSIM, the basic model's PSNR)",
    )
    compare.add_argument(
        "--baseline",
        metavar="EXPERIMENT",
        help="the configuration of this experiment (name, rev or workspace) is the baseline "
        "(default: that of the commit the experiments are based on)",
    )
    compare.add_argument(
        "--rev",
        action="append",
        metavar="COMMIT",
        help="the experiments based on this commit (repeatable; default: HEAD)",
    )
    compare.add_argument("--format", choices=("md", "csv", "json"), default="md")
    compare.add_argument("--figure", type=Path, metavar="PNG", help="also draw the distributions")
    compare.add_argument(
        "--log", action="store_true", help="store tables and figure as an MLflow run"
    )
    compare.add_argument(
        "--experiments",
        action="store_true",
        help="one row per experiment, with its MLflow run, instead of statistics",
    )
    compare.add_argument(
        "--sweep",
        metavar="NAME",
        help="the experiments of `aepipe sweep --name NAME`, pulled from the git remote if "
        "missing here",
    )
    compare.add_argument(
        "--param",
        action="append",
        metavar="KEY",
        help="with --experiments: a param column (repeatable; default: the params that differ)",
    )
    replicate = add("replicate", _replicate, "queue one configuration over several training seeds")
    replicate.add_argument(
        "--seeds", type=int, nargs="+", required=True, metavar="N", help="training seeds"
    )
    replicate.add_argument(
        "-S", "--set", action="append", metavar="KEY=VALUE", help="a param (as dvc exp run -S)"
    )
    replicate.add_argument(
        "--name", help="experiment names are NAME-seedN (default: from the -S values)"
    )
    sweep = add(
        "sweep",
        _sweep,
        "every combination of -S lists over seeds, as DVC experiments on a Ray cluster",
    )
    sweep.add_argument("--name", required=True, help="experiments are NAME-<setting>-seed<N>")
    sweep.add_argument(
        "--seeds", type=int, nargs="+", required=True, metavar="N", help="training seeds"
    )
    sweep.add_argument(
        "-S",
        "--set",
        action="append",
        metavar="KEY=V1,V2",
        help="a param and its values, comma-separated (as dvc exp run --queue -S)",
    )
    sweep.add_argument(
        "--address",
        help="join this Ray cluster (default: RAY_ADDRESS, else a Ray instance on this machine)",
    )
    sweep.add_argument(
        "--cpus-per-run", type=int, default=1, metavar="N", help="CPUs each cell reserves (1)"
    )
    push = add(
        "push",
        _push,
        "outputs and DVC's run cache with every output it names to the DVC remote, so that "
        "`dvc exp run --pull` in another clone restores what ran here",
    )
    push.add_argument("-r", "--remote", help="the DVC remote (default: the project's)")
    add(
        "restore",
        _restore,
        "after a failed run: params.yaml, dvc.lock and outputs back as last committed",
    )
    server = add("server", _server, "team MLflow tracking server on PostgreSQL")
    server.add_argument("action", choices=("start", "stop", "status"))
    server.add_argument("--dir", type=Path, help="state directory (default: .aepipe/server)")
    server.add_argument("--port", type=port_number, default=5000, help="MLflow port (5000)")
    server.add_argument(
        "--host",
        default="127.0.0.1",
        help="where MLflow accepts clients (127.0.0.1; 0.0.0.0 for the other machines of a "
        "sweep's cluster)",
    )
    server.add_argument("--db-port", type=port_number, default=5433, help="PostgreSQL port (5433)")
    host = add(
        "host",
        _host,
        "stage host: stages started by DVC on this machine skip their imports of TensorFlow, "
        "Keras and MLflow",
    )
    host.add_argument("action", choices=("start", "stop", "status"))
    host.add_argument(
        "--idle", type=float, default=60, metavar="MINUTES", help="end after this long idle (60)"
    )
    for name, help_text in STAGE_COMMANDS.items():
        stage = add(name, _stage(name), help_text)
        if name == "train":
            stage.add_argument("model", choices=("basic", "denoise"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.command, lambda: args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
