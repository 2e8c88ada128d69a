"""`aepipe restore` on a small DVC project of its own: it puts back what DVC can, and never
destroys an output whose bytes exist nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.experiments.workspace import restore
from tests.conftest import run

pytestmark = pytest.mark.e2e

MAKE = (
    "import pathlib; pathlib.Path('out').mkdir(exist_ok=True); "
    "pathlib.Path('out/a.txt').write_text(open('params.yaml').read())"
)
STAGE = f"""stages:
  make:
    cmd: python -c "{MAKE}"
    params: [n]
    outs: [out]
  single:
    cmd: python -c "open('model.bin', 'w').write('trained')"
    outs: [model.bin]
  report:
    cmd: python -c "open('report.json', 'w').write(open('params.yaml').read())"
    params: [n]
    outs:
      - report.json:
          cache: false
"""


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "dvc.yaml").write_text(STAGE)
    (tmp_path / "params.yaml").write_text("n: 1\n")
    for command in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", "t"],
        ["git", "config", "user.email", "t@t.invalid"],
        ["dvc", "init", "-q"],
        ["dvc", "repro", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "results"],
    ):
        run(command, tmp_path)
    return tmp_path


def test_outputs_only_the_workspace_holds_are_saved_before_checkout(project):
    """A stage run by hand (not through DVC): its outputs are in no cache. Restoring copies
    them aside, prints where, and only then puts back what dvc.lock records."""
    (project / "model.bin").unlink()  # DVC may have linked it to its cache
    (project / "model.bin").write_text("retrained by hand")
    (project / "out" / "a.txt").unlink()
    (project / "out" / "a.txt").write_text("made by hand")
    done = restore(project)
    saved = {
        line.split()[1]: line.split()[3].rstrip(":") for line in done if line.startswith("saved")
    }
    assert set(saved) == {"model.bin", "out"}
    assert (project / saved["model.bin"]).read_text() == "retrained by hand"
    assert (project / saved["out"] / "a.txt").read_text() == "made by hand"
    assert (project / "model.bin").read_text() == "trained"
    assert (project / "out" / "a.txt").read_text() == "n: 1\n"


def test_outputs_the_cache_holds_are_just_restored(project):
    (project / "params.yaml").write_text("n: 2\n")
    run(["dvc", "repro", "-q"], project)  # cached: DVC can bring this back any time
    done = restore(project)
    assert not [line for line in done if line.startswith("saved")]
    assert (project / "out" / "a.txt").read_text() == "n: 1\n"
    assert (project / "params.yaml").read_text() == "n: 1\n"


def test_outputs_git_keeps_come_back_from_git(project):
    """A report kept in git rather than in DVC's cache (`cache: false`): an experiment's version
    is in git's objects once committed, and is just restored; one written by hand is not, and
    is saved first."""
    (project / "params.yaml").write_text("n: 2\n")
    run(["dvc", "repro", "-q"], project)
    run(["git", "stash", "store", run(["git", "stash", "create"], project).stdout.strip()], project)
    done = restore(project)
    assert not [line for line in done if line.startswith("saved")], done
    assert (project / "report.json").read_text() == "n: 1\n"
    assert run(["git", "status", "--porcelain"], project).stdout == ""
    (project / "report.json").write_text("edited by hand")
    done = restore(project)
    [saved] = [line.split()[3].rstrip(":") for line in done if line.startswith("saved")]
    assert (project / saved).read_text() == "edited by hand"
    assert (project / "report.json").read_text() == "n: 1\n"
