"""Stage `baselines`: the half of the evaluation that no trained model enters.

Classical denoisers tuned on held-out training images and scored on the noisy test set, the best
one's PSNR against noise strength, the noisy input's own scores, and the linear probe on PCA
features and raw pixels. DVC reruns this only when the data, the noise or the code size change,
not after each training experiment; `evaluate` adds the autoencoders to these results.
"""

from __future__ import annotations

from pipeline.artifacts import baseline_results
from pipeline.core import paths, progress
from pipeline.core.config import Params
from pipeline.core.entry import stage_main
from pipeline.data.images import load_noisy, load_prepared
from pipeline.evaluation.baselines import score_baselines
from pipeline.evaluation.table import score_lines


def run(params: Params) -> None:
    split = load_prepared(paths.PREPARED_DIR)
    noisy = load_noisy(paths.NOISY_DIR)
    results = score_baselines(params, split, noisy, progress.printer("baselines"))
    baseline_results.save(results)
    for line in score_lines(results.table, results.probe_accuracy):
        print(f"baselines: {line}")
    print(f"baselines: -> {paths.BASELINES_DIR}/")


if __name__ == "__main__":
    raise SystemExit(stage_main("baselines", run))
