import pytest

from mentalarena.training.statistics import bootstrap_mean, paired_difference, proportion, wilson_interval


def test_wilson_intervals_match_published_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(3, 5) == pytest.approx((0.2307, 0.8824), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert proportion(3, 5) == {"k": 3, "n": 5, "share": 0.6, "ci_low": 0.231, "ci_high": 0.882}


def test_a_bootstrap_interval_holds_the_mean_and_narrows_with_more_data():
    few, many = bootstrap_mean([1, 4, 2, 8, 5]), bootstrap_mean([1, 4, 2, 8, 5] * 20)
    assert few["ci_low"] < few["mean"] == 4.0 < few["ci_high"]
    assert many["ci_high"] - many["ci_low"] < few["ci_high"] - few["ci_low"]
    assert bootstrap_mean([3, 3, 3]) == {"n": 3, "mean": 3.0, "ci_low": 3.0, "ci_high": 3.0}
    assert bootstrap_mean([None, float("nan")])["mean"] is None


def test_a_paired_difference_is_outside_its_interval_only_when_the_pairs_differ_consistently():
    better = paired_difference([(0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1)] * 2)
    assert better["mean"] > 0 and better["outside_interval"] is True
    mixed = paired_difference([(0, 1), (1, 0), (1, 1), (0, 0), (1, 0), (0, 1)])
    assert mixed["outside_interval"] is False
    assert paired_difference([(1, 1), (0, 0)])["outside_interval"] is False  # no difference at all
    assert paired_difference([(None, 1)])["outside_interval"] is None  # never measured on both
