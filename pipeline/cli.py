"""`aepipe`: the pipeline's stages and tools behind one command.

Errors a user can fix end as one line on stderr and exit status 2; Ctrl-C / SIGTERM exit 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.config import Params, load_params
from pipeline.errors import PipelineError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _stage(module: str) -> Callable[[argparse.Namespace], None]:
    """A handler that validates params.yaml, then runs `pipeline.stages.<module>.run`."""

    def handler(args: argparse.Namespace) -> None:
        params = load_params(args.params)
        importlib.import_module(f"pipeline.stages.{module}").run(params)

    return handler


def _train(args: argparse.Namespace) -> None:
    from pipeline.stages import train

    train.run(load_params(args.params), train.STAGES[args.model])


def _validate(args: argparse.Namespace) -> None:
    params: Params = load_params(args.params)
    print(f"{args.params}: valid ({len(params.flat())} params)")


def _params_table(args: argparse.Namespace) -> None:
    from pipeline.params_table import params_table, with_table

    table = params_table(load_params(args.params))
    if args.write is None:
        print(table, end="")
    else:
        args.write.write_text(with_table(args.write.read_text(), table))


def _lineage(args: argparse.Namespace) -> None:
    import json

    from pipeline.lineage import lineage_of, render
    from pipeline.tracking import repository_root

    found = lineage_of(args.target, repository_root())
    print(
        json.dumps(found, indent=2) if args.json else render(found), end="\n" if args.json else ""
    )


def _verify(args: argparse.Namespace) -> int:
    from pipeline.tracking import repository_root
    from pipeline.verify import verify

    findings = verify(repository_root())
    for finding in findings:
        print(finding)
    problems = sum(not finding.ok for finding in findings)
    print(f"{problems} problem(s) in {len(findings)} checks")
    return 1 if problems else 0


def _compare(args: argparse.Namespace) -> None:
    import json

    from pipeline.compare import compare, markdown
    from pipeline.tracking import repository_root

    table = compare(repository_root(), args.param, args.metric, args.rev)
    print(json.dumps(table, indent=2, default=str) if args.json else markdown(table), end="")


def _server(args: argparse.Namespace) -> None:
    from pipeline import paths, server
    from pipeline.tracking import repository_root

    config = server.ServerConfig(
        state_dir=args.dir or repository_root() / paths.STATE_DIR / "server",
        port=args.port,
        db_port=args.db_port,
        db_password=os.environ.get("AEPIPE_DB_PASSWORD", "mlflow"),
    )
    if args.action == "start":
        seconds = server.start(config)
        print(f"MLflow tracking server on PostgreSQL is up ({seconds:.1f} s). Use it with:")
        print(f"  export MLFLOW_TRACKING_URI={config.uri}")
    elif args.action == "stop":
        server.stop(config)
        print("stopped the MLflow server and PostgreSQL")
    else:
        print(server.status(config))


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
    server = add("server", _server, "team MLflow tracking server on PostgreSQL")
    server.add_argument("action", choices=("start", "stop", "status"))
    server.add_argument("--dir", type=Path, help="state directory (default: .aepipe/server)")
    server.add_argument("--port", type=int, default=5000, help="MLflow port (default 5000)")
    server.add_argument("--db-port", type=int, default=5433, help="PostgreSQL port (5433)")
    add("fetch", _stage("fetch"), "stage fetch: raw MNIST into data/raw/")
    add("prepare", _stage("prepare"), "stage prepare: subset, flatten, scale")
    add("noise", _stage("noise"), "stage noise: Gaussian noise for the denoiser")
    add("baselines", _stage("baselines"), "stage baselines: classical denoisers, pixel probes")
    train = add("train", _train, "stages train_basic / train_denoise")
    train.add_argument("model", choices=("basic", "denoise"))
    add("evaluate", _stage("evaluate"), "stage evaluate: metrics and figures")
    add("register", _stage("register"), "stage register: registry version if PSNR improves")
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # end MLflow runs and temp files as on Ctrl-C
    try:
        status = args.handler(args)
    except PipelineError as exc:
        print(f"aepipe {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"aepipe {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status or 0
