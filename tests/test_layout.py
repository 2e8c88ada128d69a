"""The package layout is the architecture: imports run one way, from the stages down to the core,
nothing but the CLI imports a stage, and TensorFlow stays inside `modelling`."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.import_graph import PACKAGE, imported_names, module_file, third_party_on_import

# Lowest first. A module may import its own sub-package and those of lower layers only.
LAYERS = (
    ("core",),
    ("data",),
    ("artifacts",),
    ("evaluation", "modelling"),
    ("tracking",),
    ("audit", "ops"),
    ("experiments",),
    ("stages",),
    ("cli",),
    ("__main__",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# The modules that import TensorFlow and Keras when imported.
TENSORFLOW_MODULES = {
    "pipeline.modelling.architectures",
    "pipeline.modelling.training",
    "pipeline.modelling.distributed",
    "pipeline.modelling.model_files",
    "pipeline.modelling.variational",
}
# Run by MLflow when a model is logged or loaded, never imported by the pipeline: it imports
# MLflow, and Keras only when the model loads.
SERVED = "pipeline.modelling.served"
HEAVY = ("tensorflow", "keras", "mlflow")


def project_modules() -> dict[str, str]:
    """Module name -> its part (first level under `pipeline`), for every module but the root."""
    found = {}
    for file in sorted((REPO_ROOT / PACKAGE).rglob("*.py")):
        parts = file.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != PACKAGE:
            found[name] = parts[1]
    return found


def imports_within_project(name: str) -> set[str]:
    file = module_file(REPO_ROOT, name)
    return {
        imported
        for imported in imported_names(REPO_ROOT, file)
        if imported.startswith(PACKAGE + ".") and module_file(REPO_ROOT, imported)
    }


def test_every_part_has_a_layer():
    assert set(project_modules().values()) <= set(RANK)


@pytest.mark.parametrize("name", sorted(project_modules()))
def test_imports_run_from_the_stages_down_to_the_core(name):
    modules = project_modules()
    part = modules[name]
    for imported in imports_within_project(name):
        target = imported.split(".")[1]
        allowed = target == part or RANK[target] < RANK[part]
        assert allowed, f"{name} ({part}) imports {imported} ({target}): imports run downwards"


def test_nothing_but_the_cli_imports_a_stage():
    importers = {
        name
        for name in project_modules()
        if any(imported.startswith("pipeline.stages.") for imported in imports_within_project(name))
    }
    assert importers <= {"pipeline.cli"}, importers


def test_importing_any_module_outside_modelling_loads_no_tensorflow_or_mlflow():
    light = sorted(set(project_modules()) - TENSORFLOW_MODULES - {SERVED, "pipeline.__main__"})
    probe = (
        "import importlib, sys\n"
        f"for name in {light!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_tensorflow_modules_are_those_listed():
    """If this fails, a module started or stopped importing TensorFlow or Keras: update the list
    (and the `modelling` docstring), so the test above keeps guarding the others."""
    importing = {
        name
        for name in project_modules()
        if {"tensorflow", "keras"} & third_party_on_import(REPO_ROOT, name)
    }
    assert importing == TENSORFLOW_MODULES


def test_the_modules_shipped_with_logged_models_stand_alone():
    """MLflow runs these where the project is not installed: they may not import it (served.py
    falls back to the package only when the shipped copy is absent, inside the project)."""
    for name in ("variational", "served"):
        file = REPO_ROOT / "pipeline" / "modelling" / f"{name}.py"
        on_import = imported_names(REPO_ROOT, file, on_import_only=True)
        assert not {n for n in on_import if n.startswith(PACKAGE)} - {
            "pipeline.modelling",
            "pipeline.modelling.variational",
        }, name
    assert "pipeline" not in (REPO_ROOT / "pipeline/modelling/variational.py").read_text()


def test_modules_are_imported_by_name_only_in_the_cli():
    """The import closure of `dvc.yaml` reads import statements; a module imported from a string
    would slip past it. Only the CLI picks stage modules by name (it is no stage's code dep), and
    the stage host its third-party preloads (it runs stages as `python -m` would, from their own
    import statements, and no stage imports it)."""
    by_name = {REPO_ROOT / PACKAGE / "cli.py", REPO_ROOT / PACKAGE / "ops" / "host.py"}
    for file in sorted((REPO_ROOT / PACKAGE).rglob("*.py")):
        source = file.read_text()
        dynamic = "import_module(" in source or "__import__(" in source
        assert not dynamic or file in by_name, file
