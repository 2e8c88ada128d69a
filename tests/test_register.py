"""The registry's champion rule, per benchmark, against an in-memory registry."""

import contextlib

import pytest

from pipeline.core.config import parse_params
from pipeline.tracking import registry
from pipeline.tracking.registry import Candidate, champion_alias, improves
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


def test_only_a_real_improvement_takes_over():
    assert improves(19.4, None)
    assert improves(19.5, 19.4)
    assert not improves(19.4, 19.4)
    assert not improves(19.4 + 1e-6, 19.4)  # float noise, e.g. the same model on two workers
    assert not improves(19.3, 19.4)


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


class Runs:
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


CANDIDATE = Candidate("models/denoise.keras", "md5abc", 19.5, {"model.kind": "dense"})


def test_a_better_candidate_takes_the_alias(registered):
    client = Registry(Version("3", {registry.SCORE: "19.4"}))
    outcome = registry.register(Runs(client), CANDIDATE, "champion-x")
    assert outcome == (
        "aepipe-denoiser version 7 (denoiser_on_noisy.psnr 19.5000, was 19.4000) is now @champion-x"
    )
    assert client.aliases == {"champion-x": "7"}
    [(uri, _, tags)] = registered
    assert uri == "models:/m-1" and tags["dvc.out.models/denoise.keras"] == "md5abc"


def test_a_champion_without_a_score_tag_is_named_not_a_crash(registered):
    client = Registry(Version("3", {}))
    outcome = registry.register(Runs(client), CANDIDATE, "champion-x")
    assert "version 3, has no readable denoiser_on_noisy.psnr tag" in outcome
    assert client.aliases == {} and registered == []
