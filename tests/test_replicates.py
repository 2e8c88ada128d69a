"""Seed replicates: the statistics against independent formulas, the verdicts, the grouping of
experiments into configurations, and `aepipe replicate` refusing bad params before queueing."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.audit import configurations, tables
from pipeline.core import shell
from pipeline.core.config import parse_params
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.evaluation import replicates
from pipeline.experiments import replicate as experiments
from pipeline.tracking.tags import replicate_group
from tests.conftest import default_params, merge

values = st.lists(
    st.floats(min_value=10, max_value=30, allow_nan=False), min_size=2, max_size=8
).filter(lambda xs: np.ptp(xs) > 1e-3)


@settings(max_examples=50, deadline=None)
@given(values)
def test_the_interval_of_the_mean_is_the_t_interval(sample):
    summary = replicates.summarise(sample)
    n, mean = len(sample), sum(sample) / len(sample)
    sd = math.sqrt(sum((x - mean) ** 2 for x in sample) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert summary.n == n
    assert summary.mean == pytest.approx(mean) and summary.std == pytest.approx(sd)
    assert (summary.low, summary.high) == pytest.approx((mean - half, mean + half))


@settings(max_examples=50, deadline=None)
@given(values, values)
def test_unpaired_differences_use_welchs_interval(a, b):
    candidate = dict(enumerate(a))
    baseline = {seed + 100: value for seed, value in enumerate(b)}  # other seeds: not paired
    diff = replicates.difference(candidate, baseline)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    estimate = np.mean(a) - np.mean(b)
    assert diff.test == "welch"
    assert (diff.low, diff.high) == pytest.approx((estimate - half, estimate + half))


def test_the_same_seeds_are_paired_and_pairing_removes_the_seed_effect():
    seed_effect = {0: 0.0, 1: 0.08, 2: -0.05, 3: 0.03}
    baseline = {s: 19.5 + e for s, e in seed_effect.items()}
    candidate = {s: 19.53 + e + 0.002 * (s % 2) for s, e in seed_effect.items()}
    paired = replicates.difference(candidate, baseline)
    d = [candidate[s] - baseline[s] for s in seed_effect]
    half = stats.t.ppf(0.975, 3) * np.std(d, ddof=1) / 2
    assert paired.test == "paired"
    assert (paired.low, paired.high) == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    assert paired.verdict == "better"  # +0.03 on every seed
    shifted = {s + 10: v for s, v in candidate.items()}  # the same values, unpaired
    assert replicates.difference(shifted, baseline).verdict == "within seed noise"


def test_verdicts_follow_the_direction_of_the_metric_and_need_two_seeds_a_side():
    low, high = {0: 0.10, 1: 0.11, 2: 0.10}, {0: 0.20, 1: 0.21, 2: 0.22}
    assert replicates.difference(high, low, higher_better=True).verdict == "better"
    assert replicates.difference(high, low, higher_better=False).verdict == "worse"
    assert replicates.higher_is_better("denoiser_on_noisy.psnr")
    assert not replicates.higher_is_better("basic_on_clean.bce")
    one = replicates.difference({0: 25.0}, low)
    assert one.verdict == "no verdict: one seed" and math.isnan(one.low)
    constant = replicates.difference({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0})
    assert (constant.test, constant.verdict) == ("exact", "identical")
    assert replicates.summarise([3.0]).n == 1 and math.isnan(replicates.summarise([3.0]).std)


def flat(**changes):
    params = default_params()
    for key, value in changes.items():
        section, _, name = key.partition("__")
        params = merge(params, {section: {name: value}} if name else {section: value})
    return parse_params(params).flat()


def frame_of(runs, code="c1"):
    records = [
        {
            "experiment": name,
            "rev": name,
            "seed": params["seed"],
            "group": replicate_group(params),
            "code": code,
            "key": replicate_group(params),
            "params": params,
            "denoiser_on_noisy.psnr": psnr,
        }
        for name, params, psnr in runs
    ]
    return pd.DataFrame.from_records(records)


def test_runs_of_one_configuration_trained_by_other_code_are_marked():
    old = frame_of([(f"a{s}", flat(seed=s), 19.5 + s / 100) for s in range(2)], code="c1")
    new = frame_of([(f"b{s}", flat(seed=s), 19.5 + s / 100) for s in range(2, 4)], code="c2")
    table = configurations.replicate_comparison(
        pd.concat([old, new]), ["denoiser_on_noisy.psnr"], None
    )
    assert list(table["configuration"]) == ["baseline *"] and table.iloc[0]["n"] == 4
    assert "* runs trained by different code" in tables.replicate_markdown(table)


def test_a_metric_that_is_not_a_number_gives_no_verdict():
    assert replicates.difference({0: math.nan, 1: 1.0}, {0: 1.0, 1: 2.0}).verdict == (
        "no verdict: not a number"
    )
    assert replicates.difference({0: math.inf, 1: 1.0}, {0: 1.0, 1: 2.0}).verdict == (
        "no verdict: not a number"
    )


def test_experiments_that_differ_only_in_seed_form_one_configuration():
    runs = [
        ("main", flat(seed=0), 19.50),
        ("d1", flat(seed=1), 19.53),
        ("d2", flat(seed=2), 19.47),
        ("lr0", flat(seed=0, train_basic__learning_rate=0.002), 19.52),
        ("lr1", flat(seed=1, train_basic__learning_rate=0.002), 19.55),
        ("lr2", flat(seed=2, train_basic__learning_rate=0.002), 19.50),
        ("n2", flat(seed=0, noise__factor=0.2), 22.6),
    ]
    table = configurations.replicate_comparison(frame_of(runs), ["denoiser_on_noisy.psnr"], None)
    by_label = table.set_index("configuration")
    assert list(table["configuration"]) == [
        "baseline",
        "train_basic.learning_rate=0.002",
        "noise.factor=0.2",
    ]
    assert by_label.loc["baseline", "n"] == 3 and by_label.loc["baseline", "seeds"] == "0 1 2"
    lr = by_label.loc["train_basic.learning_rate=0.002"]
    assert lr["test"] == "paired" and lr["difference"] == pytest.approx(0.0233333, abs=1e-6)
    assert lr["verdict"] == "better"  # +0.02 on each of the three seeds
    noise = by_label.loc["noise.factor=0.2"]
    assert noise["verdict"] == "no verdict: one seed (other benchmark)"
    markdown = tables.replicate_markdown(table)
    assert "| train_basic.learning_rate=0.002 | denoiser_on_noisy.psnr | +0.0233 |" in markdown
    assert "| noise.factor=0.2 | 1 | 0 | 22.6000 ± - - |" in markdown
    by_lr = configurations.replicate_comparison(frame_of(runs), ["denoiser_on_noisy.psnr"], "lr1")
    assert by_lr.iloc[0]["experiments"] == "lr0 lr1 lr2"


def test_a_better_psnr_on_easier_noise_is_only_higher():
    runs = [(f"a{s}", flat(seed=s), 19.5 + s / 100) for s in range(3)]
    runs += [(f"b{s}", flat(seed=s, noise__factor=0.2), 22.6 + s / 90) for s in range(3)]
    table = configurations.replicate_comparison(frame_of(runs), ["denoiser_on_noisy.psnr"], None)
    assert table.iloc[1]["verdict"] == "higher (other benchmark)"


def test_the_replicate_group_ignores_the_seed_only():
    assert replicate_group(flat(seed=0)) == replicate_group(flat(seed=7))
    assert replicate_group(flat(seed=0)) != replicate_group(flat(model__kind="conv"))
    logged = {key: str(value) for key, value in flat(seed=3).items()}  # as MLflow stores params
    assert replicate_group(logged) == replicate_group(flat(seed=0))


def as_typed(command: list[str]) -> list[str]:
    """A command as a user types it: `dvc ...` for DVC run as a module of this Python."""
    return ["dvc", *command[3:]] if command[: len(shell.DVC)] == list(shell.DVC) else command


def test_replicate_refuses_bad_params_before_queueing_anything(tmp_path, monkeypatch):
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    queued = []
    monkeypatch.setattr(shell.subprocess, "run", lambda cmd, **kw: queued.append(cmd))
    for assignments, message in (
        (["train_basic.learning_rat=0.1"], "Could not override 'train_basic.learning_rat'"),
        (["train_basic.learning_rate=abc"], "expected a number"),
        (["train_basic.epochs=1e3"], "train_basic.epochs = 1000.0"),  # a float, as DVC writes
        (["train_basic.learning_rate=0.001,0.002"], "a list of values is a sweep"),
        (["other.yaml:train_basic.epochs=4"], "params are all in params.yaml"),
        (["train_basic.epochs=3,train_denoise.epochs=4"], "-S train_basic.epochs=3,train_denoise"),
        (["train_basic.epochs=3 # c"], r"-S train_basic\.epochs=3 # c: "),
        (["train_basic.epochs=0x3"], "experiment train_basic.epochs-0x3-seed0: train_basic"),
        (["seed=3"], "the seeds are given with --seeds"),
        (["data.train_size=10", "train_basic.batch_size=64"], "must not exceed"),
    ):
        with pytest.raises(ParamsError, match=message):
            experiments.queue_replicates(tmp_path, [0, 1], assignments, None)
    with pytest.raises(ParamsError, match="distinct seeds"):
        experiments.queue_replicates(tmp_path, [1, 1], [], None)
    assert queued == []
    # DVC's `file:key=value` form is DVC's too here.
    given = ["params.yaml:train_basic.epochs=4"]
    assert experiments.validated(tmp_path / "params.yaml", given, 5, "x").train_basic.epochs == 4


def test_replicate_queues_one_named_experiment_per_seed(tmp_path, monkeypatch):
    import subprocess

    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    queued = []

    existing = "refs/exps/ab/cdef/taken-seed1\n"
    failing = set()

    def fake_run(cmd, **kwargs):
        cmd = as_typed(cmd)
        if cmd[:2] == ["git", "for-each-ref"]:
            return subprocess.CompletedProcess(cmd, 0, existing, "")
        if cmd[:3] == ["dvc", "queue", "status"]:
            return subprocess.CompletedProcess(cmd, 0, "Task  Name  Created  Status\n", "")
        queued.append(cmd)
        code = 1 if any(name in cmd for name in failing) else 0
        return subprocess.CompletedProcess(cmd, code, "", "ERROR: refused\n")

    monkeypatch.setattr(shell.subprocess, "run", fake_run)
    names = experiments.queue_replicates(
        tmp_path, [0, 1, 2], ["train_basic.learning_rate=0.002"], None
    )
    assert names == [f"train_basic.learning_rate-0.002-seed{s}" for s in (0, 1, 2)]
    with pytest.raises(ParamsError, match="taken-seed1 exist or are queued"):
        experiments.queue_replicates(tmp_path, [0, 1], [], "taken")
    with pytest.raises(ParamsError, match="letters, digits"):
        experiments.queue_replicates(tmp_path, [0], [], "a..b")
    failing.add("late-seed2")  # DVC refuses the second: the first is taken back
    with pytest.raises(PipelineError, match="refused; nothing queued"):
        experiments.queue_replicates(tmp_path, [1, 2], [], "late")
    assert queued[-2:] == [["dvc", "queue", "remove", f"late-seed{s}"] for s in (1, 2)]
    assert queued[1] == [
        "dvc", "exp", "run", "--queue", "--name", names[1],
        "-S", "seed=1", "-S", "train_basic.learning_rate=0.002",
    ]  # fmt: skip


def test_ctrl_c_while_replicates_are_queued_takes_back_every_one(tmp_path, monkeypatch):
    """All or nothing also when interrupted: the one being queued may or may not have been."""
    import subprocess

    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    calls = []

    def fake_run(cmd, **kwargs):
        cmd = as_typed(cmd)
        calls.append(cmd)
        if cmd[:3] == ["dvc", "exp", "run"]:  # out of reach of the terminal's Ctrl-C
            assert kwargs["start_new_session"] is True
        if cmd[:2] == ["git", "for-each-ref"] or cmd[:3] == ["dvc", "queue", "status"]:
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if "cut-seed1" in cmd and cmd[:3] == ["dvc", "exp", "run"]:
            raise KeyboardInterrupt
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(shell.subprocess, "run", fake_run)
    with pytest.raises(KeyboardInterrupt):
        experiments.queue_replicates(tmp_path, [0, 1, 2], [], "cut")
    removed = [cmd[-1] for cmd in calls if cmd[:3] == ["dvc", "queue", "remove"]]
    assert removed == ["cut-seed0", "cut-seed1"]


def test_the_frame_keeps_full_precision_and_leaves_out_unreadable_metrics(monkeypatch):
    from tests.conftest import REPO_ROOT

    monkeypatch.setattr(
        configurations, "experiment_params", lambda root, row: flat(seed=row["seed"])
    )
    metric = "denoiser_on_noisy.psnr"
    rows = [
        {"rev": "a1", "Experiment": "kept", "seed": 0, metric: 19.538331209598155},
        {"rev": "b2", "Experiment": "unreadable", "seed": 1, metric: "!"},  # DVC's mark
        {"rev": "c3", "Experiment": "missing", "seed": 2, metric: None},
        {"rev": "d4", "Experiment": "queued", "seed": 3, metric: 19.0, "State": "Queued"},
    ]
    frame = configurations.replicate_frame(REPO_ROOT, rows, [metric])
    assert list(frame["experiment"]) == ["kept"]
    assert frame[metric].iloc[0] == 19.538331209598155  # not the table's rounded text


def test_a_failed_dvc_command_is_quoted_by_its_error_line():
    from pipeline.core.shell import dvc_error

    assert dvc_error("Running...\nERROR: unexpected error - no such rev\nhint\n") == (
        "unexpected error - no such rev"
    )
    assert dvc_error("\n  first words\nmore\n") == "first words" and dvc_error("") == "failed"
