"""The README's quick-start blocks, run line by line as written, in a tiny reproduced copy of the
repository as a newcomer has it: a venv at `.venv`, no git identity anywhere, an empty home."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, pipeline_env, run, tiny_repository

pytestmark = pytest.mark.e2e

QUICK_START = ("**An experiment.**", "**Where did this model come from?**")


def block_after(text: str, lead: str) -> list[str]:
    """The command lines of the first shell block after the paragraph that starts with `lead`."""
    start = text.index(lead)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block, f"no shell block after {lead}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_block_extraction_keeps_each_line_and_its_comment():
    text = "**A.** words\n\n```sh\nfoo --x   # first\n\nbar\n```\n**B.**\n```sh\nbaz\n```\n"
    assert block_after(text, "**A.**") == ["foo --x   # first", "bar"]
    assert block_after(text, "**B.**") == ["baz"]


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    repo = tiny_repository(tmp_path_factory.mktemp("recipes") / "repo", tmp_path_factory)
    run(["git", "config", "--unset", "user.name"], repo)
    run(["git", "config", "--unset", "user.email"], repo)
    (repo / ".venv").symlink_to(REPO_ROOT / ".venv")  # what `make repro` made
    home = tmp_path_factory.mktemp("home")
    env = pipeline_env({"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"})
    env["PATH"] = env["PATH"].split(":", 1)[1]  # the venv comes from the block's `source`
    return repo, env


def shell(line: str, repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", "-c", f"set -e\nsource .venv/bin/activate\n{line}"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"{line}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    return result


def test_the_quick_start_blocks_work_as_written(newcomer):
    repo, env = newcomer
    readme = (REPO_ROOT / "README.md").read_text()
    lines = [line for lead in QUICK_START for line in block_after(readme, lead)]
    assert lines[0] == "source .venv/bin/activate"
    assert subprocess.run(
        ["git", "config", "user.name"], cwd=repo, env=env, capture_output=True
    ).returncode, "the copy must start without a git identity"
    outputs = {}
    for line in lines[1:]:
        command = line.split("#")[0].strip()
        if "<name>" in command:
            [name] = run(
                ["dvc", "exp", "ls", "--name-only"], repo, env=shell_path(env)
            ).stdout.split()
            command = command.replace("<name>", name)
        outputs[command] = shell(command, repo, env).stdout
        if command.startswith("dvc exp apply"):
            applied = yaml.safe_load((repo / "params.yaml").read_text())
            assert applied["noise"]["factor"] == 0.6
    compared = next(out for command, out in outputs.items() if "compare --experiments" in command)
    assert "noise.factor" in compared and "0.6" in compared
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # restored as committed
    lineage = next(out for command, out in outputs.items() if "lineage" in command)
    assert "train_denoise" in lineage and "mlflow" in lineage.lower()


def shell_path(env: dict[str, str]) -> dict[str, str]:
    return {**env, "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{env['PATH']}"}
