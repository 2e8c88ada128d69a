"""`aepipe`: the pipeline's stages and the commands that audit and operate it, behind one command.

Errors a user can fix end as one line on stderr and exit status 2; Ctrl-C / SIGTERM exit 130.
This is the only module that imports the stage modules.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path

from pipeline.core.config import load_params
from pipeline.core.entry import run_command

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
        run = importlib.import_module(f"pipeline.stages.{name}").run
        if name == "train":
            run(params, args.model)
        else:
            run(params)

    return handler


def _validate(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    print(f"{args.params}: valid ({len(params.flat())} params)")


def _params_table(args: argparse.Namespace) -> None:
    from pipeline.core.params_table import params_table, with_table

    table = params_table(load_params(args.params))
    if args.write is None:
        print(table, end="")
    else:
        args.write.write_text(with_table(args.write.read_text(), table))


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

    from pipeline.audit.compare import compare, markdown
    from pipeline.core.paths import repository_root

    table = compare(repository_root(), args.param, args.metric, args.rev)
    print(json.dumps(table, indent=2, default=str) if args.json else markdown(table), end="")


def _server(args: argparse.Namespace) -> None:
    from pipeline.core import paths
    from pipeline.ops import server

    config = server.ServerConfig(
        state_dir=args.dir or paths.repository_root() / paths.STATE_DIR / "server",
        port=args.port,
        db_port=args.db_port,
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


def _restore(args: argparse.Namespace) -> None:
    from pipeline.core.paths import repository_root
    from pipeline.ops.workspace import restore

    for line in restore(repository_root()):
        print(f"restored {line}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aepipe", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file (default: params.yaml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], None], help_text: str):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    add("validate", _validate, "check params.yaml against the schema")
    table = add("params-table", _params_table, "print the README's params table (from the schema)")
    table.add_argument(
        "--write",
        type=Path,
        metavar="README.md",
        help="replace the table between the params-table markers of this file",
    )
    lineage = add("lineage", _lineage, "how a model, DVC output or MLflow run was made")
    lineage.add_argument("target", help="a file (e.g. models/denoise.keras) or an MLflow run id")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    add("verify", _verify, "re-hash outputs and MLflow artifacts against dvc.lock")
    compare = add("compare", _compare, "params and metrics of DVC experiments, with MLflow links")
    compare.add_argument(
        "--param",
        action="append",
        metavar="KEY",
        help="a param column (repeatable; default: the params that differ)",
    )
    compare.add_argument(
        "--metric",
        action="append",
        metavar="KEY",
        help="a metric column (repeatable; default: the three PSNRs)",
    )
    compare.add_argument(
        "--rev",
        action="append",
        metavar="COMMIT",
        help="also the experiments based on this commit (repeatable)",
    )
    compare.add_argument("--json", action="store_true", help="print JSON")
    add(
        "restore",
        _restore,
        "after a failed run: params.yaml, dvc.lock and outputs back as last committed",
    )
    server = add("server", _server, "team MLflow tracking server on PostgreSQL")
    server.add_argument("action", choices=("start", "stop", "status"))
    server.add_argument("--dir", type=Path, help="state directory (default: .aepipe/server)")
    server.add_argument("--port", type=int, default=5000, help="MLflow port (default 5000)")
    server.add_argument("--db-port", type=int, default=5433, help="PostgreSQL port (5433)")
    for name, help_text in STAGE_COMMANDS.items():
        stage = add(name, _stage(name), help_text)
        if name == "train":
            stage.add_argument("model", choices=("basic", "denoise"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.command, lambda: args.handler(args))
