"""The registry's champion rule, per benchmark, against an in-memory registry."""

import pytest

from pipeline.core.config import parse_params
from pipeline.tracking import registry
from pipeline.tracking.registry import Candidate, champion_alias
from tests.conftest import default_params, merge


def test_champions_are_per_benchmark():
    defaults = parse_params(default_params())
    assert champion_alias(defaults) == "champion-noise0_4-seed1-test10000-v2"
    easier = parse_params(merge(default_params(), {"noise": {"factor": 0.2}}))
    assert champion_alias(easier) == "champion-noise0_2-seed1-test10000-v2"
    other_seed = parse_params(merge(default_params(), {"noise": {"seed": 7}}))
    fewer = parse_params(merge(default_params(), {"data": {"test_size": 500}}))
    more_training = parse_params(merge(default_params(), {"data": {"train_size": 20000}}))
    assert champion_alias(other_seed) != champion_alias(defaults)
    assert champion_alias(fewer) != champion_alias(defaults)
    assert champion_alias(more_training) == champion_alias(defaults)  # same test, so they compete
    nearly = parse_params(merge(default_params(), {"noise": {"factor": 0.4000001}}))
    assert champion_alias(nearly) == "champion-noise0_4000001-seed1-test10000-v2"
    small = parse_params(merge(default_params(), {"noise": {"factor": 1e-05}}))
    assert champion_alias(small) == "champion-noise1e-05-seed1-test10000-v2"


SPREAD = registry.SEED_SPREAD_DECIBELS["noise0_4-seed1-test10000-v2"]


def candidate(score=19.5, group="g-new", code="c1"):
    benchmark = "noise0_4-seed1-test10000-v2"
    return Candidate("models/denoise.keras", "md5abc", score, group, code, benchmark, {})


OLD = ("g-old", "c1")  # the champion's configuration: replicate group, training code


def test_the_first_candidate_of_a_benchmark_becomes_champion():
    assert registry.decide(candidate(), None, None).promote


def test_another_seed_of_the_champions_configuration_never_takes_over():
    decision = registry.decide(candidate(score=25.0, group="g-old"), 19.4, OLD)
    assert not decision.promote and "another seed is not an improvement" in decision.reason
    # The same params trained by other code are another configuration: a fix can win.
    fixed = registry.decide(candidate(score=25.0, group="g-old", code="c2"), 19.4, OLD)
    assert fixed.promote


def test_the_configuration_ignores_params_that_change_no_score():
    from pipeline.core.config import parse_params
    from pipeline.tracking.tags import replicate_group
    from tests.conftest import default_params, merge

    base = parse_params(default_params()).flat()
    for change in (
        {"seed": 3},
        {"evaluate": {"n_examples": 4}},
        {"data": {"source": "keras"}},
        {"distribute": {"workers": 3}},
    ):
        assert replicate_group(parse_params(merge(default_params(), change)).flat()) == (
            replicate_group(base)
        ), change
    other = parse_params(merge(default_params(), {"evaluate": {"robustness_size": 100}}))
    assert replicate_group(other.flat()) != replicate_group(base)


def test_a_single_seed_gain_must_exceed_the_recorded_seed_spread():
    assert SPREAD > 0.02  # measured, not a placeholder
    within = registry.decide(candidate(score=19.4 + SPREAD * 0.9), 19.4, OLD)
    beyond = registry.decide(candidate(score=19.4 + SPREAD * 1.1), 19.4, OLD)
    assert not within.promote and "not beyond the seed spread recorded" in within.reason
    assert beyond.promote and "beyond the seed spread recorded" in beyond.reason
    worse = registry.decide(candidate(score=17.0), 19.4, OLD)
    assert not worse.promote and worse.reason.endswith("not an improvement")
    unmeasured = Candidate("m", "x", 10.3, "g", "c", "noise9_0-seed1-test10-v2", {})
    assert "largest recorded seed spread" in registry.decide(unmeasured, 10.0, OLD).reason
    # Where the store shows a larger spread on this benchmark, that is the margin.
    noisy = registry.decide(unmeasured, 10.0, OLD, measured=0.35)
    assert not noisy.promote and "measured in the store for this benchmark (0.3500" in noisy.reason
    nan = registry.decide(candidate(score=float("nan")), 19.4, OLD)
    assert not nan.promote and "not a score" in nan.reason


def test_with_replicates_the_interval_of_the_gain_decides_not_the_margin():
    champion = {0: 19.50, 1: 19.52, 2: 19.49}
    consistent = {0: 19.56, 1: 19.585, 2: 19.55}  # +0.06 on every seed: below the spread
    noisy = {0: 19.60, 1: 19.45, 2: 19.52}  # a higher mean, but seed noise
    real = registry.decide(candidate(score=19.55), 19.50, OLD, (consistent, champion))
    assert real.promote and "paired, 3 vs 3 seeds" in real.reason
    noise = registry.decide(candidate(score=19.60), 19.50, OLD, (noisy, champion))
    assert not noise.promote and "within seed noise" in noise.reason
    other_seeds = {3: 19.56, 4: 19.585, 5: 19.55}
    welch = registry.decide(candidate(score=19.55), 19.50, OLD, (other_seeds, champion))
    assert "welch" in welch.reason
    # A better configuration, but this seed's model is below the champion: the alias stays.
    lower = registry.decide(candidate(score=19.45), 19.50, OLD, (consistent, champion))
    assert not lower.promote and "scores below the champion itself" in lower.reason


def test_a_model_no_better_than_its_noisy_input_never_takes_the_alias():
    """Doing nothing scores the noisy input's PSNR; a model below it is not a denoiser, even
    when the benchmark has no champion yet."""
    worse = Candidate("m", "x", 7.66, "g", "c", "noise0_4-seed1-test10000-v2", {}, floor=10.88)
    decision = registry.decide(worse, None)
    assert not decision.promote
    assert "7.6600 dB, not above the noisy input itself (10.8800 dB" in decision.reason
    better = Candidate("m", "x", 11.0, "g", "c", "noise0_4-seed1-test10000-v2", {}, floor=10.88)
    assert registry.decide(better, None).reason == "no champion yet"


# The registry against a real MLflow store (SQLite, in a temporary directory).

BENCHMARK = "noise0_4-seed1-test10000-v2"
ALIAS = f"champion-{BENCHMARK}"


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store):
    import shutil

    import mlflow

    from pipeline.tracking.finder import RunFinder

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("autoencoder")
    return RunFinder(client, experiment, uri)


def trained(store, md5: str) -> None:
    """A training run that logged the model file with this md5, as train_denoise does."""
    import mlflow

    tags = {"dvc.out.models/denoise.keras": md5, "git.commit": "abc", "dvc.stage": "train_denoise"}
    with mlflow.start_run(experiment_id=store.experiment_id, tags=tags):
        mlflow.create_external_model(name="denoise")


def scored(md5: str, score: float, benchmark: str = BENCHMARK, group: str = "g") -> Candidate:
    return Candidate("models/denoise.keras", md5, score, group, "c1", benchmark, {}, floor=10.0)


def versions(store) -> dict[str, dict[str, str]]:
    found = store.client.search_model_versions(f"name = '{registry.MODEL_NAME}'")
    return {str(v.version): v.tags for v in found}


def champion(store, alias: str = ALIAS) -> str:
    return str(store.client.get_model_version_by_alias(registry.MODEL_NAME, alias).version)


def test_the_first_model_of_a_benchmark_becomes_its_champion_and_its_decision_is_kept(store):
    trained(store, "a" * 32)
    outcome = registry.register(store, scored("a" * 32, 19.4), ALIAS)
    assert outcome.startswith("aepipe-denoiser version 1 (denoiser_on_noisy.psnr 19.4000) is now")
    assert champion(store) == "1"
    tags = versions(store)["1"]
    assert tags["aepipe.decision"] == "promoted: no champion yet"
    assert tags["aepipe.benchmark"] == BENCHMARK and tags["denoiser_on_noisy.psnr"] == "19.4"


def test_one_model_file_on_two_benchmarks_is_two_versions_each_with_its_own_score(store):
    """The same file scored on 200 and then on 100 test images: the second benchmark's champion
    and its gain are measured against that benchmark's scores only."""
    other = "noise0_4-seed1-test100-v2"
    trained(store, "a" * 32)
    trained(store, "b" * 32)
    registry.register(store, scored("a" * 32, 19.0, BENCHMARK), ALIAS)
    registry.register(store, scored("a" * 32, 19.9, other), f"champion-{other}")
    outcome = registry.register(store, scored("b" * 32, 20.17, other, "g2"), f"champion-{other}")
    found = versions(store)
    assert [found[v]["aepipe.benchmark"] for v in ("1", "2", "3")] == [BENCHMARK, other, other]
    assert [found[v]["denoiser_on_noisy.psnr"] for v in ("1", "2")] == ["19.0", "19.9"]
    assert (
        "gain +0.2700 dB over one seed" in outcome and champion(store, f"champion-{other}") == "3"
    )
    # Registered again on a benchmark it has: the same version, decided again.
    again = registry.register(store, scored("a" * 32, 19.9, other), f"champion-{other}")
    assert again.startswith("aepipe-denoiser version 2 ") and len(versions(store)) == 3


def test_a_champion_tag_that_is_not_a_finite_number_is_named_not_trusted(store):
    trained(store, "a" * 32)
    trained(store, "b" * 32)
    registry.register(store, scored("a" * 32, 19.0), ALIAS)
    store.client.set_model_version_tag(registry.MODEL_NAME, "1", registry.SCORE, "nan")
    outcome = registry.register(store, scored("b" * 32, 25.0, group="g2"), ALIAS)
    assert "the champion, version 1, has no denoiser_on_noisy.psnr on this benchmark" in outcome
    assert champion(store) == "1"


def test_a_register_waits_for_the_decision_on_an_earlier_version_of_its_benchmark(store):
    """Two registers racing (as on one tracking server): version 1, the worse model, was
    registered first and its register has not decided yet, seeing no champion. The register of
    version 2 must not decide before it: it waits, then measures its gain against version 1.
    Deciding at once, it would see no champion, and the first register's late decision (from
    its stale view) would then crown the worse model."""
    import threading
    import time

    import psutil

    from pipeline.core import processes

    trained(store, "a" * 32)
    trained(store, "b" * 32)
    client = store.client
    client.create_registered_model(registry.MODEL_NAME)
    mine = processes.process_identity(psutil.Process())  # alive: not an abandoned register
    client.create_model_version(
        registry.MODEL_NAME,
        store.logged_model(
            store.producing("models/denoise.keras", "a" * 32)[0]["run_id"]
        ).model_uri,
        tags={
            "aepipe.benchmark": BENCHMARK,
            "aepipe.decision": f"pending {mine} {time.time():.0f}",
            "dvc.out.models/denoise.keras": "a" * 32,
            registry.SCORE: "19.0",
        },
    )
    waiting, outcome = threading.Event(), []
    second = threading.Thread(
        target=lambda: outcome.append(
            registry.register(
                store, scored("b" * 32, 19.8, group="g2"), ALIAS, lambda _: waiting.set()
            )
        )
    )
    second.start()
    assert waiting.wait(600), "the second register never waited"
    # The first register decides now, from the view it had: no champion yet.
    client.set_registered_model_alias(registry.MODEL_NAME, ALIAS, "1")
    client.set_model_version_tag(registry.MODEL_NAME, "1", "aepipe.decision", "promoted")
    second.join(600)
    assert outcome and "(denoiser_on_noisy.psnr 19.8000, was 19.0000) is now @" in outcome[0]
    assert champion(store) == "2"


def test_a_version_left_pending_by_a_register_that_died_is_not_waited_for(store):
    import subprocess
    import sys

    import psutil

    from pipeline.core import processes

    trained(store, "a" * 32)
    trained(store, "b" * 32)
    registry.register(store, scored("a" * 32, 19.0), ALIAS)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = processes.process_identity(psutil.Process(dead.pid))
    dead.wait()
    store.client.set_model_version_tag(
        registry.MODEL_NAME, "1", "aepipe.decision", f"pending {identity} 0"
    )
    outcome = registry.register(store, scored("b" * 32, 19.8, group="g2"), ALIAS)
    assert "is now @" in outcome
    assert versions(store)["1"]["aepipe.decision"].startswith("abandoned")
