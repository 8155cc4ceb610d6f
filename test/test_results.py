"""The success-rate interval eval reports (``results.wilson_interval``): plain tests."""

from __future__ import annotations

import pytest

from qwen_vla_ros.results import wilson_interval


def test_the_interval_matches_the_wilson_formula_at_known_points():
    # Wilson score 95 % intervals: 5/20 -> 0.112..0.469, 0/10 -> 0..0.278, 10/10 -> 0.722..1
    assert wilson_interval(5, 20) == pytest.approx((0.1119, 0.4687), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_more_episodes_narrow_the_interval_around_the_rate():
    lo20, hi20 = wilson_interval(5, 20)
    lo80, hi80 = wilson_interval(20, 80)
    assert lo20 < lo80 < 0.25 < hi80 < hi20


def test_impossible_counts_are_refused():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)
    assert wilson_interval(0, 0) == (0.0, 1.0)
