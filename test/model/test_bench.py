"""`bench model`'s harness: variants timed in one run, and a budget that cuts a warm-up short
(a compile that would outlast a GPU lease) while keeping the figures of what finished."""

from __future__ import annotations

import time

import pytest

from qwen_vla_ros.model.bench import OverBudget, _deadline, format_result, run_model_bench


def test_variants_are_timed_in_one_run():
    lines: list[str] = []
    r = run_model_bench("tiny", iters=2, warmup=1, variants=("eager", "eager, 4 steps"),
                        log=lines.append)
    assert list(r["variants"]) == ["eager", "eager, 4 steps"] and r["skipped"] == []
    for var in r["variants"].values():
        assert set(var["latency_ms"]) == {"preprocess", "backbone", "decoder", "total"}
    assert any(line.startswith("warm-up 'eager, 4 steps'") for line in lines)
    assert "total p50 eager, 4 steps / eager" in format_result(r)


def test_a_warm_up_past_the_budget_is_cut_and_later_variants_skipped():
    lines: list[str] = []
    # building the model alone outlasts a zero budget: the first warm-up is interrupted
    r = run_model_bench("tiny", iters=2, warmup=1, variants=("eager", "eager, 4 steps"),
                        log=lines.append, max_seconds=0.0)
    assert r["skipped"] == ["eager", "eager, 4 steps"] and r["variants"] == {}
    assert any("over the 0 s budget" in line for line in lines)


def test_deadline_interrupts_the_main_thread_and_is_disarmed_after():
    start = time.perf_counter()
    with pytest.raises(OverBudget), _deadline(start + 0.05):
        while time.perf_counter() - start < 30:  # bounded: a missed alarm fails, not hangs
            pass
    assert time.perf_counter() - start < 30
    with _deadline(time.perf_counter() + 0.05):
        pass
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:  # the alarm was cancelled on leaving: nothing fires
        pass
