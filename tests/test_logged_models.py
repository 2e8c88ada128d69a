"""The models the pipeline logs to MLflow load where this project is not installed: every kind,
through MLflow's pyfunc interface, in a fresh process that cannot import `pipeline`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from pipeline.modelling import architectures, model_files
from pipeline.tracking.runs import StageRun

# Run in a fresh process: `pipeline` cannot be imported, as on a machine without this project.
LOAD_ELSEWHERE = """
import json, sys
sys.modules["pipeline"] = None
import mlflow, numpy as np
mlflow.set_tracking_uri(sys.argv[1])
images = np.load(sys.argv[2])
outputs = {
    kind: mlflow.pyfunc.load_model(uri).predict(images).tolist()
    for kind, uri in json.loads(sys.argv[3]).items()
}
print(json.dumps(outputs))
"""


def test_every_kind_of_logged_model_loads_and_predicts_without_the_project(tmp_path):
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    images = np.random.default_rng(0).random((6, 784)).astype(np.float32)
    expected, uris = {}, {}
    for kind in architectures.KINDS:
        model = architectures.build_autoencoder(8, kind, seed=0)
        path = tmp_path / f"{kind}.keras"
        model_files.save_model(model, path)
        expected[kind] = architectures.predict(model, images)
        with mlflow.start_run() as run:
            StageRun(mlflow, run.info.run_id, {}).log_model_file(path, images, expected[kind])
        [logged] = mlflow.search_logged_models(
            filter_string=f"source_run_id = '{run.info.run_id}'", output_format="list"
        )
        uris[kind] = logged.model_uri
    np.save(tmp_path / "images.npy", images)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_ELSEWHERE,
            store,
            str(tmp_path / "images.npy"),
            json.dumps(uris),
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    for kind in architectures.KINDS:
        np.testing.assert_allclose(np.array(outputs[kind]), expected[kind], atol=1e-6)
