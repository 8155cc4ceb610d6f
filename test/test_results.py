"""The success-rate interval eval reports (``results.wilson_interval``) and the check that a
result read back belongs to its checkpoint (``results.made_after``): plain tests."""

from __future__ import annotations

import os

import pytest

from qwen_vla_ros.results import made_after, pool_evals, wilson_interval


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


def test_a_result_counts_only_when_written_after_every_file_of_its_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    result = tmp_path / "eval.json"
    assert not made_after(result, ckpt)                  # neither exists yet
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_text("w")
    result.write_text("{}")
    os.utime(ckpt / "config.json", (100, 100))
    os.utime(ckpt / "model.safetensors", (200, 200))
    os.utime(result, (300, 300))
    assert made_after(result, ckpt)
    os.utime(ckpt / "model.safetensors", (400, 400))     # the weights rewritten since
    assert not made_after(result, ckpt)
    assert not made_after(result, tmp_path / "empty")    # no checkpoint files: never current


def _eval(seeds, wins, spl=None, checkpoint="ck", targets=None):
    seeds = list(seeds)
    rows = [{"seed": s, "target": t, "success": i < wins}
            for i, (s, t) in enumerate(zip(seeds, targets or [None] * len(seeds), strict=True))]
    return {"checkpoint": checkpoint, "task": "vln_goto", "episodes": len(seeds),
            "successes": wins, "spl": spl, "seeds": list(seeds), "per_episode": rows}


def test_pooled_evaluations_add_episodes_and_narrow_the_interval():
    a, b = _eval(range(0, 20), 4, spl=0.2), _eval(range(20, 40), 5, spl=0.3)
    pooled = pool_evals([a, b])
    assert (pooled["successes"], pooled["episodes"]) == (9, 40)
    assert pooled["success_ci95"] == pytest.approx(list(wilson_interval(9, 40)))
    assert pooled["spl"] == pytest.approx(0.25) and pooled["seeds"] == list(range(40))
    # the language check: one start, four objects named -- four episodes, not a repeat
    lang = _eval([7, 7, 7, 7], 2, targets=["red_box", "green_cylinder", "blue_sphere",
                                            "yellow_box"])
    assert pool_evals([lang])["episodes"] == 4
    # episodes naming no known object count in neither the rate nor the SPL
    c = {**_eval(range(40, 60), 2, spl=0.1), "episodes_naming_no_known_object": 10}
    pooled = pool_evals([a, c])
    assert (pooled["successes"], pooled["episodes"]) == (6, 30)
    assert pooled["spl"] == pytest.approx((0.2 * 20 + 0.1 * 10) / 30)


def test_pooling_refuses_what_is_not_one_figure():
    a = _eval(range(0, 20), 4)
    with pytest.raises(ValueError, match="more than one"):
        pool_evals([a, _eval(range(10, 30), 4)])         # seeds 10-19 twice
    with pytest.raises(ValueError, match="checkpoints"):
        pool_evals([a, _eval(range(20, 40), 4, checkpoint="other")])
    with pytest.raises(ValueError, match="no evaluations"):
        pool_evals([])


def test_one_checkpoint_under_two_paths_is_pooled(tmp_path):
    ckpt = tmp_path / "run" / "ckpt"
    ckpt.mkdir(parents=True)
    (tmp_path / "link").symlink_to(ckpt)
    a = _eval(range(0, 20), 4, checkpoint=str(ckpt))
    b = _eval(range(20, 40), 5, checkpoint=str(tmp_path / "link"))
    assert pool_evals([a, b])["episodes"] == 40
    with pytest.raises(ValueError, match="checkpoints"):
        pool_evals([a, _eval(range(20, 40), 4, checkpoint=str(tmp_path / "run"))])
