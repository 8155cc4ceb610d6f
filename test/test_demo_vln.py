"""End to end: `qwen-vla-ros demo vln` (MuJoCo room, navigation_node, mode_manager), short;
asserts on the recorded bag and summary, and that offline replay of that bag (with its frame
history) reproduces the live plans."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ros]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("demo_vln")
    env = dict(os.environ, MUJOCO_GL="egl")
    proc = subprocess.run([sys.executable, "-m", "qwen_vla_ros.cli", "demo", "vln",
                           "--seconds", "8", "--out", str(out), "--checkpoint",
                           str(tiny_checkpoint)], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text())


def test_vln_demo_records_plans_odometry_and_limited_commands(demo):
    from qwen_vla_ros.demos.vln import read_vln_bag

    out, s = demo
    assert s["plans"] >= 3 and s["goals_published"] >= 3
    # Commands per second of sim time: a loaded machine slows the sim, not the node's rate
    # (the wall-clock rate read 10-14 Hz with two collections running beside this test).
    assert s["time_base"] == "sim time (/clock)"
    assert 17 <= s["cmd_vel_hz"] <= 23
    assert s["max_linear"] <= 0.4 + 1e-9 and s["max_angular"] <= 1.2 + 1e-9
    assert (out / "vln.png").read_bytes()[:4] == b"\x89PNG"
    d = read_vln_bag(out / "bag")
    assert [m for _, m in d["modes"]][-2:] == ["POLICY", "HOLD"]
    assert all(len(w) <= 8 for _, w in d["plans"])
    # Accelerations stay within the follower's limits, except stops to zero (safety).
    cmd = np.array([c[1:] for c in d["cmd"]])
    dv = np.abs(np.diff(cmd, axis=0))
    driving = (np.abs(cmd[1:]) > 0).any(axis=1)
    assert driving.any(), "the base was never commanded to move"
    assert np.all(dv[driving, 0] <= 0.8 / 20 + 1e-6) and np.all(dv[driving, 1] <= 3.0 / 20 + 1e-6)
    # The odometry moves only while commanded: in HOLD at the end the base stands still.
    assert s["topics"]["/front/image_raw"] > 20 and s["topics"]["/odom"] > 300


def test_replay_of_the_vln_bag_reproduces_its_plans(demo, tiny_checkpoint, tmp_path):
    from qwen_vla_ros.replay.offline import ReplayOptions, replay

    out, _s = demo
    res = replay(ReplayOptions(bag=out / "bag", checkpoint=tiny_checkpoint, out=tmp_path,
                               progress=False),  # finds /navigation_node by itself
                 log=lambda m: None)
    rep = res.report
    assert res.embodiment == "vln" and rep["tick_source"] == "recorded"
    assert rep["chunks"] == rep["live_chunks"] >= 3
    assert rep["inputs_found"] == rep["ticks"]
    assert rep["live_vs_replay"]["max_abs_diff"] <= 1e-5
