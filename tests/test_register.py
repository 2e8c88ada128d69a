from pipeline.config import parse_params
from pipeline.stages.register import champion_alias, improves
from tests.conftest import default_params, merge


def test_champions_are_per_benchmark():
    defaults = parse_params(default_params())
    assert champion_alias(defaults) == "champion-noise0_4-seed1-test10000"
    easier = parse_params(merge(default_params(), {"noise": {"factor": 0.2}}))
    assert champion_alias(easier) == "champion-noise0_2-seed1-test10000"
    other_seed = parse_params(merge(default_params(), {"noise": {"seed": 7}}))
    assert champion_alias(other_seed) != champion_alias(defaults)


def test_only_a_real_improvement_takes_over():
    assert improves(19.4, None)
    assert improves(19.5, 19.4)
    assert not improves(19.4, 19.4)
    assert not improves(19.4 + 1e-6, 19.4)  # float noise, e.g. the same model on two workers
    assert not improves(19.3, 19.4)
