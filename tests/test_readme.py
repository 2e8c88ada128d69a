import subprocess

from pipeline.core.config import load_params
from pipeline.core.params_table import params_table, with_table
from tests.conftest import REPO_ROOT


def committed_params(tmp_path):
    """The defaults as committed: after `dvc exp run -S ...` the workspace's params.yaml holds
    the experiment's values, which are not the README's defaults."""
    shown = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:  # not a git checkout: the file is all there is
        return load_params(REPO_ROOT / "params.yaml")
    (tmp_path / "params.yaml").write_text(shown.stdout)
    return load_params(tmp_path / "params.yaml")


def test_readme_params_table_matches_the_schema(tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    table = params_table(committed_params(tmp_path))
    assert with_table(readme, table) == readme, "run: aepipe params-table --write README.md"


def test_every_schema_key_is_in_the_table():
    table = params_table(load_params(REPO_ROOT / "params.yaml"))
    for key in load_params(REPO_ROOT / "params.yaml").flat():
        assert f"| `{key}` |" in table


def test_the_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make repro" in readme and "make test" in readme
    assert "make test" in (REPO_ROOT / ".ci/run").read_text()
