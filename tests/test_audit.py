"""`aepipe lineage` and `aepipe compare` refuse bad arguments in one line, before any work."""

import subprocess

import pytest

from pipeline.audit import compare, configurations, lineage
from pipeline.audit.lineage import LockHistory, StageRecord
from pipeline.core.errors import PipelineError
from tests.conftest import error_message


class History(LockHistory):
    """A dvc.lock history without a repository: one workspace record."""

    def __init__(self, outs):
        self.records = [StageRecord("workspace", "prepare", "cmd", {}, {}, outs)]


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    (tmp_path / "data" / "prepared" / "x.npy").write_bytes(b"x")
    (tmp_path / "README.md").write_text("readme")
    return tmp_path


def test_lineage_takes_recorded_outputs_and_files_inside_them(repo):
    history = History({"data/prepared": "abc.dir"})
    assert lineage.recorded_output("data/prepared", repo, history) == "data/prepared"
    assert lineage.recorded_output("data/prepared/x.npy", repo, history) == "data/prepared"
    assert lineage.recorded_output("0123456789abcdef0123456789abcdef", repo, history) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("", "give a file (e.g. models/denoise.keras) or an MLflow run id"),
        ("  ", "give a file"),
        ("/etc/passwd", "/etc/passwd: outside the repository"),
        (".", ".: not an output of any stage in dvc.lock (outputs: data/prepared)"),
        ("README.md", "README.md: not an output of any stage"),
    ],
)
def test_lineage_refuses_what_is_not_an_output_before_hashing_anything(repo, target, expected):
    message = error_message(
        PipelineError, lineage.recorded_output, target, repo, History({"data/prepared": "x"})
    )
    assert expected in message and "\n" not in message


def git(*args, cwd):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_compare_needs_a_dvc_repository_with_a_commit_and_real_revisions(tmp_path):
    assert "not a DVC repository" in error_message(
        PipelineError, compare.check_repository, tmp_path, None
    )
    (tmp_path / ".dvc").mkdir()
    git("init", "-q", cwd=tmp_path)
    assert "no git commit yet" in error_message(
        PipelineError, compare.check_repository, tmp_path, None
    )
    (tmp_path / "f").write_text("f")
    git("add", "f", cwd=tmp_path)
    git("commit", "-qm", "f", cwd=tmp_path)
    compare.check_repository(tmp_path, ["HEAD"])
    message = error_message(PipelineError, compare.check_repository, tmp_path, ["deadbeef"])
    assert message == f"--rev deadbeef: no such commit in {tmp_path}"


def test_compare_names_unknown_columns_and_lists_the_known_ones():
    rows = [
        {"Experiment": None, "rev": "workspace", "seed": 0, "a.psnr": 1.0, "data/raw": "md5.dir"},
        {"Experiment": None, "rev": "main", "params.yaml": "1a2b", "a.psnr": 1.0},
        {"Experiment": "x", "rev": "abc", "seed": 1, "a.ssim": 0.5},
    ]
    known = compare.metric_keys(rows, {"seed"})
    assert known == {"a.psnr", "a.ssim"}
    message = error_message(
        PipelineError, compare.check_columns, ["a.psnr", "a.psnrr"], known, "--metric"
    )
    assert message == "unknown --metric a.psnrr; known: a.psnr, a.ssim"


def test_the_workspace_counts_only_when_every_stage_ran_with_its_params(tmp_path):
    """An edit of params.yaml that no stage has run yet (here a training param, which evaluate
    does not read) makes the workspace's metrics another configuration's: left out."""
    import yaml

    lock = {
        "stages": {
            "train_denoise": {"params": {"params.yaml": {"train_denoise.epochs": 10}}},
            "evaluate": {"params": {"params.yaml": {"evaluate.n_examples": 5}}},
        }
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    ran = {"train_denoise.epochs": 10, "evaluate.n_examples": 5}
    assert configurations._workspace_ran_with(tmp_path, ran)
    assert not configurations._workspace_ran_with(tmp_path, {**ran, "train_denoise.epochs": 12})


def test_experiments_sharing_a_model_file_each_link_their_own_training_run():
    class Runs:
        def producing(self, path, md5):
            return [
                {"dvc_experiment": "second", "link": "http://x/runs/2"},
                {"dvc_experiment": "first", "link": "http://x/runs/1"},
            ]

    assert compare._training_run_link(Runs(), "m" * 32, "first") == "http://x/runs/1"
    assert compare._training_run_link(Runs(), "m" * 32, "second") == "http://x/runs/2"
    restored = compare._training_run_link(Runs(), "m" * 32, "third")
    assert restored == "http://x/runs/2 (trained for second)"


def test_an_edited_workspace_shows_no_metrics_of_another_run():
    rows = [
        {"Experiment": None, "rev": "workspace", "train_basic.epochs": 7, "a.psnr": 11.83},
        {"Experiment": "x", "rev": "abc", "train_basic.epochs": 10, "a.psnr": 11.83},
    ]
    table = compare.comparison(rows, ["train_basic.epochs"], ["a.psnr"], None, True)
    assert table[0]["state"] == configurations.STALE and table[0]["a.psnr"] is None
    assert table[1]["a.psnr"] == 11.83
    assert compare.comparison(rows, [], ["a.psnr"], None)[0]["a.psnr"] == 11.83
