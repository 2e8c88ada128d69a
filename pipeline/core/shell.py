"""The git and DVC commands the project runs, and what a failed one said, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# DVC as a module of this Python: the same installation whatever PATH holds.
DVC = (sys.executable, "-m", "dvc")


class GitError(subprocess.CalledProcessError):
    """A failed git command, read as one line: `git <command>: <what git said>`."""

    @property
    def said(self) -> str:
        lines = [line.strip() for line in (self.stderr or "").splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith(("fatal:", "error:", "!"))]
        return (errors or lines or ["failed"])[0]

    def __str__(self) -> str:
        return f"git {self.cmd[1]}: {self.said}"


def git(*args: str, cwd: Path, check: bool = True, stdin: str | None = None) -> str:
    """The output of `git <args>` in `cwd`; where git fails, GitError (with `check=False`,
    "")."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return result.stdout
    if check:
        raise GitError(result.returncode, result.args, result.stdout, result.stderr)
    return ""


def commit_of(rev: str, cwd: Path) -> str:
    """The full hash of the commit `rev` names in `cwd`'s repository; "" if it names none."""
    named = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=cwd, check=False)
    return named.strip()


def dvc(
    *args: str, cwd: Path, env: dict[str, str] | None = None, own_session: bool = False
) -> subprocess.CompletedProcess:
    """`dvc <args>` in `cwd`, its output captured (check `returncode`, quote `dvc_error`); with
    `own_session`, out of reach of the terminal's Ctrl-C (for a command that must not be cut)."""
    return subprocess.run(
        [*DVC, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        start_new_session=own_session,
    )


def dvc_error(stderr: str) -> str:
    """What a failed `dvc` command said, in one line: its `ERROR:` line, else its first line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    error = next((line for line in lines if line.startswith("ERROR")), None)
    return error.removeprefix("ERROR: ") if error else (lines[0] if lines else "failed")
