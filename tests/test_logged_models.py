"""The models the pipeline logs to MLflow load where this project is not installed: every kind,
through MLflow's pyfunc interface, in a fresh process that cannot import `pipeline`."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from pipeline.modelling import architectures, model_files
from pipeline.tracking.runs import RunLogger

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
            logger = RunLogger(mlflow, store, "", run.info.run_id, {})
            logger.log_model_file(path, images, expected[kind])
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


def test_the_served_model_refuses_what_is_not_an_image_in_one_message():
    """What MLflow's scoring server answers with HTTP 400 (INVALID_PARAMETER_VALUE): NaN, pixels
    scaled 0-255, the wrong number of pixels."""
    from mlflow.exceptions import MlflowException

    from pipeline.modelling.served import checked_images

    good = np.full((2, 784), 0.5, np.float32)
    np.testing.assert_array_equal(checked_images(good.tolist()), good)
    nan, bright = good.copy(), good.copy()
    nan[1, 3] = np.nan
    bright[0, 0] = 255.0
    for given, problem in (
        (nan, "1 image(s), the first at row 1, hold NaN or infinite pixels"),
        (bright, "the first at row 0, hold pixels outside [0, 1]"),
        (good[:, :100], "200 values, not a multiple of 784"),
        ([["a"] * 784], "not an array of numbers"),
    ):
        with pytest.raises(MlflowException, match=re.escape(problem)) as caught:
            checked_images(given)
        assert caught.value.get_http_status_code() == 400
