"""Where each stage reads and writes, relative to the repository root.

`dvc.yaml` names the same paths; `tests/test_dvc_yaml.py` keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
NOISY_DIR = Path("data/noisy")
BASELINES_DIR = Path("data/baselines")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")
FIGURES_DIR = REPORTS_DIR / "figures"
METRICS_FILE = REPORTS_DIR / "metrics.json"
DENOISERS_TABLE = REPORTS_DIR / "denoisers.csv"
ROBUSTNESS_TABLE = REPORTS_DIR / "robustness.csv"
REGISTRY_RECEIPT = REPORTS_DIR / "registry_candidate.json"
# Local state that must survive DVC deleting a stage's outputs (resume checkpoints, run ids).
STATE_DIR = Path(".aepipe")
FETCH_RECORD = STATE_DIR / "fetch.json"  # which source served data/raw here
CHECKPOINTS_DIR = STATE_DIR / "checkpoints"


# The training stages, and the model each writes (`models/<name>.keras`).
TRAINING_STAGES = {"train_basic": "basic", "train_denoise": "denoise"}


def model_file(model_name: str) -> Path:
    return MODELS_DIR / f"{model_name}.keras"


def history_file(stage: str) -> Path:
    return REPORTS_DIR / stage / "history.csv"


def repository_root(start: Path | None = None) -> Path:
    """The main repository's root, also from inside `<root>/.dvc/tmp/exps/<tmp>/`, where DVC
    runs queued experiments."""
    start = (start or Path.cwd()).resolve()
    for parent in start.parents:
        if parent.name == ".dvc" and start.is_relative_to(parent / "tmp" / "exps"):
            return parent.parent
    return start
