"""dvc.yaml and the code agree: paths, and each stage's params are real keys it reads."""

import yaml

from pipeline import paths
from pipeline.config import load_params
from pipeline.stages import baselines, evaluate, register
from tests.conftest import REPO_ROOT

DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def entries(stage: str, field: str) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in DVC[stage].get(field, [])}


def test_stage_outputs_are_the_paths_the_code_writes():
    assert entries("fetch", "outs") == {str(paths.RAW_DIR)}
    assert entries("prepare", "outs") == {str(paths.PREPARED_DIR)}
    assert entries("noise", "outs") == {str(paths.NOISY_DIR)}
    assert entries("baselines", "outs") == {str(paths.BASELINES_DIR)}
    assert baselines.RESULTS_FILE.parent == baselines.EXAMPLES_DIR.parent == paths.BASELINES_DIR
    assert entries("train_basic", "outs") == {
        str(paths.model_file("basic")),
        str(paths.history_file("train_basic")),
    }
    assert entries("train_denoise", "outs") == {
        str(paths.model_file("denoise")),
        str(paths.history_file("train_denoise")),
    }
    evaluate_outputs = {str(path) for path in evaluate.output_files()}
    assert entries("evaluate", "outs") | entries("evaluate", "metrics") == evaluate_outputs
    assert entries("evaluate", "metrics") == {str(paths.METRICS_FILE)}
    assert entries("register", "outs") == {str(register.CANDIDATE_FILE)}


def test_every_params_dep_is_a_schema_key_and_stages_read_only_their_own():
    keys = set(load_params(REPO_ROOT / "params.yaml").flat())
    for stage, body in DVC.items():
        assert set(body.get("params", [])) <= keys, stage
    assert not any(k.startswith("train_denoise.") for k in entries("train_basic", "params"))
    assert not any(k.startswith("train_") for k in entries("evaluate", "params"))
    assert not any(k.startswith(("train_", "model.kind")) for k in entries("baselines", "params"))
    assert "models/basic.keras" not in entries("baselines", "deps")


def test_every_code_dep_exists():
    for stage, body in DVC.items():
        for dep in body.get("deps", []):
            if dep.startswith("pipeline/"):
                assert (REPO_ROOT / dep).is_file(), (stage, dep)
