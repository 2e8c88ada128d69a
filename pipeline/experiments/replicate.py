"""`aepipe replicate`: one configuration queued over several training seeds, as ordinary DVC
experiments with readable names (`<name>-seed<N>`), each checked against the schema first."""

from __future__ import annotations

from pathlib import Path

from pipeline.core import interrupts
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.core.shell import dvc, dvc_error, git
from pipeline.experiments.overrides import NAME_CHARS, check_name, validated


def experiment_names(prefix: str, seeds: list[int]) -> list[str]:
    return [f"{prefix}-seed{seed}" for seed in seeds]


def default_prefix(assignments: list[str]) -> str:
    text = "_".join(assignments) or "defaults"
    name = NAME_CHARS.sub("-", text.replace("=", "-")).replace("..", "-").strip("-.")[:60]
    return name.rstrip("-.") or "defaults"


def existing_names(root: Path) -> set[str]:
    """Names of the DVC experiments of this repository, and of those queued."""
    refs = git("for-each-ref", "--format=%(refname)", "refs/exps", cwd=root, check=False).split()
    names = {ref.rsplit("/", 1)[-1] for ref in refs}
    status = dvc("queue", "status", cwd=root).stdout.splitlines()
    return names | {line.split()[1] for line in status[1:] if len(line.split()) > 2}


def queue_replicates(
    root: Path, seeds: list[int], assignments: list[str], prefix: str | None
) -> list[str]:
    """Check every seed's params, then queue one experiment per seed; return their names."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ParamsError("--seeds: give distinct seeds, e.g. --seeds 0 1 2")
    prefix = prefix or default_prefix(assignments)
    check_name(prefix)
    names = experiment_names(prefix, seeds)
    for seed, name in zip(seeds, names, strict=True):
        validated(root / "params.yaml", assignments, seed, f"experiment {name}")
    taken = sorted(set(names) & existing_names(root))
    if taken:
        raise ParamsError(f"experiments {', '.join(taken)} exist or are queued; choose --name")
    queued: list[str] = []
    try:
        for seed, name in zip(seeds, names, strict=True):
            command = ["exp", "run", "--queue", "--name", name, "-S", f"seed={seed}"]
            command += [part for assignment in assignments for part in ("-S", assignment)]
            queued.append(name)
            # DVC queues by changing the workspace and putting it back: a Ctrl-C in the middle
            # would leave params.yaml changed. So DVC runs in a session of its own (the
            # terminal's Ctrl-C reaches only this process) and the interrupt waits for it.
            with interrupts.held():
                result = dvc(*command, cwd=root, own_session=True)
            if result.returncode != 0:
                raise PipelineError(
                    f"dvc exp run --queue --name {name}: {dvc_error(result.stderr)}; nothing queued"
                )
    except BaseException:  # all or nothing: take back what this call queued
        with interrupts.held():
            for name in queued:
                dvc("queue", "remove", name, cwd=root)
        raise
    return names
