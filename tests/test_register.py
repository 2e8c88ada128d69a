"""The registry's champion rule, per benchmark, against an in-memory registry."""

import contextlib

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


SPREAD = registry.SEED_SPREAD_DB["noise0_4-seed1-test10000-v2"]


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


class Version:
    def __init__(self, version, tags):
        self.version, self.tags = version, tags


class Registry:
    """What `registry.register` asks of MLflow's client, in memory."""

    def __init__(self, champion=None):
        self.champion = champion
        self.aliases = {}

    def get_model_version_by_alias(self, name, alias):
        import mlflow

        if self.champion is None:
            raise mlflow.exceptions.MlflowException("no such alias")
        return self.champion

    def set_registered_model_alias(self, name, alias, version):
        self.aliases[alias] = version

    def search_runs(self, *args, **kwargs):
        return []  # no replicates

    def search_model_versions(self, query):
        return []


class Runs:
    experiment_id = "1"

    def __init__(self, client):
        self.client = client

    def producing(self, path, md5):
        run = {"run_id": "r1", "git_commit": "abc", "git_dirty": "false", "dvc_experiment": ""}
        return [run]

    def logged_model(self, run_id):
        return type("Logged", (), {"model_uri": "models:/m-1"})()


@pytest.fixture
def registered(monkeypatch):
    calls = []

    def register_model(uri, name, tags):
        calls.append((uri, name, tags))
        return Version("7", tags)

    import mlflow

    monkeypatch.setattr(mlflow, "register_model", register_model)
    monkeypatch.setattr(registry, "store_lock", contextlib.nullcontext)
    return calls


CANDIDATE = candidate(score=19.4 + SPREAD + 0.01)


def test_a_better_candidate_takes_the_alias(registered):
    client = Registry(
        Version(
            "3",
            {
                registry.SCORE: "19.4",
                "aepipe.replicate_group": "g-old",
                "aepipe.training_code": "c1",
            },
        )
    )
    outcome = registry.register(Runs(client), CANDIDATE, "champion-x")
    assert outcome.startswith(
        f"aepipe-denoiser version 7 (denoiser_on_noisy.psnr {CANDIDATE.score:.4f}, was 19.4000) "
        "is now @champion-x: gain"
    )
    assert client.aliases == {"champion-x": "7"}
    [(uri, _, tags)] = registered
    assert uri == "models:/m-1" and tags["dvc.out.models/denoise.keras"] == "md5abc"
    assert tags["aepipe.replicate_group"] == "g-new"


def test_a_rerun_with_another_seed_is_registered_without_the_alias(registered):
    client = Registry(
        Version(
            "3",
            {
                registry.SCORE: "19.4",
                "aepipe.replicate_group": "g-new",
                "aepipe.training_code": "c1",
            },
        )
    )
    outcome = registry.register(Runs(client), CANDIDATE, "champion-x")
    assert outcome.startswith("aepipe-denoiser version 7 (denoiser_on_noisy.psnr")
    assert "registered without @champion-x (version 3, 19.4000): same configuration" in outcome
    assert client.aliases == {} and len(registered) == 1


def test_a_champion_without_a_score_tag_is_named_not_a_crash(registered):
    client = Registry(Version("3", {}))
    outcome = registry.register(Runs(client), CANDIDATE, "champion-x")
    assert "version 3, has no readable denoiser_on_noisy.psnr tag" in outcome
    assert client.aliases == {} and registered == []
