"""`aepipe sweep` before anything runs: the cells of a sweep (every combination of the -S lists
times every seed, read as DVC reads -S), their names, and refusals that name the cell."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from pipeline.core.errors import ParamsError, PipelineError
from pipeline.experiments import sweep
from pipeline.experiments.cells import Cell, Outcome, remote_experiments
from tests.conftest import default_params


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    for command in (["git", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=tmp_path, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"],
        cwd=tmp_path,
        check=True,
    )
    return tmp_path


def test_the_cells_are_every_combination_times_every_seed(repo):
    plan = sweep.plan(
        repo, "grid", [0, 1], ["train_basic.learning_rate=0.001,0.002", "model.kind=dense,conv"]
    )
    assert [cell.name for cell in plan.cells] == [
        f"grid-{setting}-seed{seed}" for setting in (1, 2, 3, 4) for seed in (0, 1)
    ]
    assert [cell.assignments for cell in plan.cells[::2]] == [
        ("train_basic.learning_rate=0.001", "model.kind=dense"),
        ("train_basic.learning_rate=0.001", "model.kind=conv"),
        ("train_basic.learning_rate=0.002", "model.kind=dense"),
        ("train_basic.learning_rate=0.002", "model.kind=conv"),
    ]
    assert plan.cells[3].command() == [
        "exp", "run", "--pull", "--allow-missing", "-n", "grid-2-seed1",
        "-S", "seed=1", "-S", "train_basic.learning_rate=0.001", "-S", "model.kind=conv",
    ]  # fmt: skip
    assert sweep.plan(repo, "one", [3], []).cells == (Cell("one-1-seed3", 1, 3, ()),)


def test_the_spec_changes_with_the_commit_and_the_cells_only(repo):
    first = sweep.plan(repo, "s", [0, 1], ["train_basic.epochs=1,2"])
    assert sweep.plan(repo, "s", [0, 1], ["train_basic.epochs=1,2"]).spec == first.spec
    assert sweep.plan(repo, "s", [0, 2], ["train_basic.epochs=1,2"]).spec != first.spec
    assert sweep.plan(repo, "s", [0, 1], ["train_basic.epochs=1,3"]).spec != first.spec


@pytest.mark.parametrize(
    ("seeds", "assignments", "message"),
    [
        ([0, 1], ["train_basic.epochs=1,0"], r"^cell s-2-seed0: train_basic\.epochs = 0: Input"),
        ([0], ["train_basic.epoch=1,2"], "Could not override 'train_basic.epoch'"),
        ([0], ["seed=1,2"], "the seeds are given with --seeds"),
        ([1, 1], [], "distinct seeds"),
        ([0], ["data.train_size=10,20000"], "cell s-1-seed0: train_basic.batch_size = 64"),
    ],
)
def test_a_bad_cell_refuses_the_whole_sweep_naming_it(repo, seeds, assignments, message):
    with pytest.raises(ParamsError, match=message) as caught:
        sweep.plan(repo, "s", seeds, assignments)
    assert "\n" not in str(caught.value)


def test_names_must_make_git_refs(repo):
    for bad in ("a b", "-x", "a..b", "é"):
        with pytest.raises(ParamsError, match="letters, digits"):
            sweep.plan(repo, bad, [0], [])


def test_a_commit_must_exist_and_be_pushed_and_the_workspace_clean(repo, tmp_path_factory):
    with pytest.raises(PipelineError, match="no git remote `origin`"):
        sweep.shared_context(repo, "HEAD")
    bare = tmp_path_factory.mktemp("origin") / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run(["git", "remote", "add", "origin", str(bare)], cwd=repo, check=True)
    commit = sweep.plan(repo, "s", [0], []).commit
    with pytest.raises(PipelineError, match=f"commit {commit[:7]} is not on origin"):
        sweep.shared_context(repo, commit)
    (repo / "params.yaml").write_text("edited: true\n")
    with pytest.raises(PipelineError, match=r"uncommitted changes \(params\.yaml\)"):
        sweep.shared_context(repo, commit)


def test_relative_remote_paths_are_made_absolute_for_the_workers(repo):
    assert sweep._resolved_url(repo, "../shared/origin.git") == str(
        (repo / "../shared/origin.git").resolve()
    )
    for url in ("/abs/path", "https://host/x.git", "git@host:team/x.git", "s3://bucket/dvc"):
        assert sweep._resolved_url(repo, url) == url


def test_experiment_refs_on_a_remote_are_read_with_their_commit(repo, tmp_path_factory):
    bare = tmp_path_factory.mktemp("refs") / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    ref = f"refs/exps/{head[:2]}/{head[2:]}/lr-1-seed0"
    subprocess.run(["git", "push", "-q", str(bare), f"HEAD:{ref}"], cwd=repo, check=True)
    assert remote_experiments(repo, str(bare)) == {"lr-1-seed0": head}


def test_the_progress_line_of_a_cell_says_where_and_how_long():
    done = Outcome(
        "lr-1-seed0",
        "done",
        metrics={"denoiser_on_noisy": {"psnr": 19.4567}},
        seconds={"clone": 0.2, "run": 31.0, "push": 1.5},
        node="node-a",
    )
    assert sweep._outcome_line(done, 40.2) == (
        "lr-1-seed0 done on node-a (clone 0.2 s, run 31.0 s, push 1.5 s): denoiser PSNR "
        "19.46 dB [40 s]"
    )
    failed = Outcome("lr-2-seed0", "failed", reason="aepipe train: error: training diverged")
    assert sweep._outcome_line(failed, 1) == (
        "lr-2-seed0: failed: aepipe train: error: training diverged"
    )


def test_a_sweeps_baseline_is_its_first_setting_at_its_lowest_seed():
    from pipeline.experiments.sweep import first_cell

    names = ["lr-2-seed0", "lr-10-seed0", "lr-1-seed2", "lr-1-seed10", "lr-1-seed1"]
    assert first_cell(names) == "lr-1-seed1"
