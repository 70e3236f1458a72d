"""The design's power statement for the replicate-aware test, made before the run (``raysweep.power``)."""

import math

import numpy as np
import pytest
from scipy import stats

from raysweep.power import PowerLimit, power_limit, replicate_sd_multiple
from raysweep.report import paired


def _welch_p(x, y, var, df):
    return paired._welch(x, y, (var, df), (var, df))[3]


@pytest.mark.parametrize("replicates,n_losses", [(3, 6), (5, 26), (7, 26)])
def test_the_stated_multiple_is_the_threshold_of_the_replicate_test(replicates, n_losses):
    """Two losses whose replicates spread with variance 1 and whose cases agree exactly (no case term): the test's
    p-value crosses Holm's first threshold alpha / m where the statement says, 1% either side."""
    alpha, m, cases = 0.05, n_losses * (n_losses - 1) // 2, 12
    multiple = replicate_sd_multiple(replicates, n_losses, alpha)
    y = np.zeros((replicates, cases))
    for factor, claimed in ((1.01, True), (0.99, False)):
        x = np.full((replicates, cases), multiple * factor)
        assert (_welch_p(x, y, 1.0, replicates - 1) < alpha / m) is claimed


def test_the_multiple_by_hand_and_its_edges():
    # 7 replicates, 26 losses: t at 0.05 / 650 two-sided on 12 df, times sqrt(2 / 7)
    expected = stats.t.ppf(1 - 0.05 / 650, 12) * math.sqrt(2 / 7)
    assert replicate_sd_multiple(7, 26, 0.05) == pytest.approx(expected, rel=1e-9)
    assert 2.8 < replicate_sd_multiple(7, 26, 0.05) < 3.0
    assert replicate_sd_multiple(2, 26, 0.05) > 50  # one degree of freedom per loss: hopeless (the config warns)
    assert replicate_sd_multiple(1, 26, 0.05) is None and replicate_sd_multiple(3, 1, 0.05) is None
    # more replicates, a smaller threshold
    values = [replicate_sd_multiple(r, 26, 0.05) for r in range(2, 12)]
    assert values == sorted(values, reverse=True)


def test_the_sentence_states_it_and_old_records_still_read():
    limit = power_limit(32, 26, 0.05, replicates=7)
    assert "With 7 replicates per loss, a pair can be claimed only when its mean difference exceeds 2.9 replicate " \
           "standard deviations" in limit.sentence()
    assert "replicates per loss" not in power_limit(32, 26, 0.05).sentence()
    old = {k: v for k, v in limit.to_dict().items() if k not in ("replicates", "replicate_sd_multiple")}
    assert PowerLimit(**old).sentence() == power_limit(32, 26, 0.05).sentence()  # a sweep.json from before


def test_plan_and_sweep_json_carry_the_statement():
    from raysweep.config import power_limits, validate
    from raysweep.sweep.plan import make_plan, plan_as_text

    raw = {"name": "p", "datasets": {"synthetic": {"options": {"image_size": 32, "depth": 4, "num_volumes": 2},
                                                   "select_options": {"num_volumes": 1},
                                                   "eval_options": {"num_volumes": 8}}},
           "architectures": {"cnn": {"arch": "Unet", "encoder": "resnet18"}},
           "losses": ["dice", "ce", "focal"], "tuning": {"replicates": 5}}
    cfg = validate(raw)
    limit = power_limits(cfg)["synthetic/cnn"]
    assert limit.replicates == 5 and limit.replicate_sd_multiple == replicate_sd_multiple(5, 3, 0.05)
    text = plan_as_text(make_plan(cfg, gpus=0, steps_per_s=["10"]))
    assert f"design (synthetic/cnn): {limit.sentence()}" in text
