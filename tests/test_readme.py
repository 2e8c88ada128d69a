from pipeline.core.config import load_params
from pipeline.core.params_table import params_table, with_table
from tests.conftest import REPO_ROOT


def test_readme_params_table_matches_the_schema():
    readme = (REPO_ROOT / "README.md").read_text()
    table = params_table(load_params(REPO_ROOT / "params.yaml"))
    assert with_table(readme, table) == readme, "run: aepipe params-table --write README.md"


def test_every_schema_key_is_in_the_table():
    table = params_table(load_params(REPO_ROOT / "params.yaml"))
    for key in load_params(REPO_ROOT / "params.yaml").flat():
        assert f"| `{key}` |" in table


def test_the_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make repro" in readme and "make test" in readme
    assert "make test" in (REPO_ROOT / ".ci/run").read_text()
