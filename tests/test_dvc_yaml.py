"""dvc.yaml and the code agree: output paths, params keys, and code deps that are exactly the
modules each stage's command imports."""

from pathlib import Path

import pytest
import yaml

from pipeline.artifacts import baseline_results
from pipeline.core import paths
from pipeline.core.config import load_params
from tests.conftest import REPO_ROOT
from tests.import_graph import closure, command_module, expand, is_docstring_only

DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]

# Modules left out of `deps` on purpose, because they cannot change a byte of any stage output:
# they only decide where MLflow runs are logged and what those runs record. Editing them must not
# retrain the models. (`tracking/registry.py` is not here: the alias it computes is in the
# register stage's receipt.)
CANNOT_CHANGE_OUTPUTS = {
    Path("pipeline/tracking/store.py"),  # which MLflow store, and whether it answers
    Path("pipeline/tracking/runs.py"),  # what a stage's MLflow run logs
    Path("pipeline/tracking/recorder.py"),  # the process that logs it
    Path("pipeline/tracking/finder.py"),  # read-only run lookups
    Path("pipeline/tracking/tags.py"),  # tag names
    Path("pipeline/tracking/provenance.py"),  # git state and versions, for tags
    Path("pipeline/core/processes.py"),  # process identities, for that bookkeeping
    Path("pipeline/core/params_guard.py"),  # can only refuse to go on, never change a result
    Path("pipeline/core/shell.py"),  # the git and dvc commands, for lineage tags
    Path("pipeline/stages/__init__.py"),  # one line for a Ctrl-C while a stage starts
}


def entries(stage: str, field: str) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in DVC[stage].get(field, [])}


def code_deps(root: Path, body: dict) -> set[Path]:
    """The module files a stage's `deps` cover (directories expanded)."""
    listed = (dep for dep in body.get("deps", []) if dep.startswith("pipeline/"))
    return {file for dep in listed for file in expand(root, dep)}


def can_change_outputs(root: Path, file: Path) -> bool:
    return file not in CANNOT_CHANGE_OUTPUTS and not is_docstring_only(root / file)


def dep_problems(root: Path, body: dict) -> tuple[list[str], list[str]]:
    """(modules the command imports that `deps` lacks, modules `deps` lists it never imports)."""
    imported = {
        f for f in closure(root, command_module(body["cmd"])) if can_change_outputs(root, f)
    }
    listed = {f for f in code_deps(root, body) if can_change_outputs(root, f)}
    return sorted(map(str, imported - listed)), sorted(map(str, listed - imported))


@pytest.mark.parametrize("stage", list(DVC))
def test_code_deps_are_exactly_the_modules_the_command_imports(stage):
    missing, unused = dep_problems(REPO_ROOT, DVC[stage])
    assert not missing, f"stage {stage} imports modules dvc.yaml does not list: {missing}"
    assert not unused, f"stage {stage} lists modules it does not import: {unused}"


def test_the_check_names_a_dep_deleted_from_dvc_yaml():
    prepare = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["prepare"]
    prepare["deps"].remove("pipeline/data/mnist.py")
    assert dep_problems(REPO_ROOT, prepare) == (["pipeline/data/mnist.py"], [])
    prepare["deps"].append("pipeline/evaluation/figures.py")
    assert dep_problems(REPO_ROOT, prepare)[1] == ["pipeline/evaluation/figures.py"]


def test_the_closure_follows_imports_inside_functions(tmp_path):
    package = tmp_path / "pipeline"
    (package / "stages").mkdir(parents=True)
    (package / "__init__.py").write_text('"""root"""\n')
    (package / "stages" / "__init__.py").write_text('"""stages"""\n')
    (package / "late.py").write_text("X = 1\n")
    (package / "early.py").write_text("from pipeline import late as _\n")
    (package / "stages" / "s.py").write_text(
        "import pipeline.early\n\ndef run():\n    from pipeline.late import X\n"
    )
    (package / "unused.py").write_text("")
    found = closure(tmp_path, "pipeline.stages.s")
    assert {file.name for file in found} == {"__init__.py", "s.py", "early.py", "late.py"}


def test_stage_outputs_are_the_paths_the_code_writes():
    assert entries("fetch", "outs") == {str(paths.RAW_DIR)}
    assert entries("prepare", "outs") == {str(paths.PREPARED_DIR)}
    assert entries("noise", "outs") == {str(paths.NOISY_DIR)}
    assert entries("baselines", "outs") == {str(paths.BASELINES_DIR)}
    assert baseline_results.RESULTS_FILE.parent == paths.BASELINES_DIR
    assert baseline_results.EXAMPLES_DIR.parent == paths.BASELINES_DIR
    for stage, model in (("train_basic", "basic"), ("train_denoise", "denoise")):
        assert entries(stage, "outs") | entries(stage, "plots") == {
            str(paths.model_file(model)),
            str(paths.history_file(stage)),
        }
    evaluate_outputs = {
        paths.METRICS_FILE,
        paths.DENOISERS_TABLE,
        paths.ROBUSTNESS_TABLE,
        paths.FIGURES_DIR,
    }
    assert entries("evaluate", "outs") | entries("evaluate", "plots") | entries(
        "evaluate", "metrics"
    ) == {str(path) for path in evaluate_outputs}
    assert entries("evaluate", "metrics") == {str(paths.METRICS_FILE)}
    assert entries("register", "outs") == {str(paths.REGISTRY_RECEIPT)}


def test_every_stage_that_can_be_restored_from_the_run_cache_is():
    """DVC keeps no run cache for a stage with an uncached plain out (only uncached metrics and
    plots are allowed): a sweep cell or a teammate would then retrain what ran before."""
    for stage, body in DVC.items():
        for out in body.get("outs", []):
            if isinstance(out, dict):
                [(path, options)] = out.items()
                assert options.get("cache", True) or options.get("persist"), (stage, path)


def test_every_params_dep_is_a_schema_key_and_stages_read_only_their_own():
    keys = set(load_params(REPO_ROOT / "params.yaml").flat())
    for stage, body in DVC.items():
        assert set(body.get("params", [])) <= keys, stage
    assert not any(k.startswith("train_denoise.") for k in entries("train_basic", "params"))
    assert not any(k.startswith("train_") for k in entries("evaluate", "params"))
    assert not any(k.startswith(("train_", "model.kind")) for k in entries("baselines", "params"))
    assert "models/basic.keras" not in entries("baselines", "deps")


def test_every_dep_exists():
    for stage, body in DVC.items():
        for dep in body.get("deps", []):
            if dep.startswith("pipeline/") or dep == "params.yaml":
                assert (REPO_ROOT / dep).exists(), (stage, dep)
