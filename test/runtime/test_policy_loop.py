"""PolicyLoop: the per-tick logic shared by policy_node and offline replay."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.model.policy import ActionChunk
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.policy_loop import PolicyLoop


@pytest.fixture
def loop():
    spec = load_embodiment("vx300s_single")
    lp = PolicyLoop(spec, max_age=0.2, seed=10, instruction="pick")
    names = [d.joint for d in spec.action]
    lp.add_joint_state("", names, [0.1] * len(names), 1.00)
    for cam in spec.cameras:
        lp.add_image(cam, np.zeros((8, 8, 3), np.uint8), 1.05)
    return lp


def chunk_for(loop, req, value=0.0):
    spec = loop.spec
    return ActionChunk(np.full((spec.horizon, spec.action_dim), value), spec.name,
                       req.observation.stamp, spec.dt)


def test_request_records_inputs_and_oldest_stamp(loop):
    req = loop.request(1.1)
    assert not isinstance(req, Rejection)
    assert req.observation.stamp == 1.00 and req.age == pytest.approx(0.1)
    assert req.inputs == {"cam_high": 1.05, "cam_wrist": 1.05, "joint_states:robot": 1.00}
    info = req.info(steps=10)
    assert info["seed"] == 10 and info["embodiment"] == "vx300s_single"


def test_seed_advances_only_on_accepted_chunks(loop):
    req = loop.request(1.1)
    assert loop.accept(req, chunk_for(loop, req, np.nan)) is not None  # NaN: dropped
    assert loop.request(1.1).seed == 10
    assert loop.accept(req, chunk_for(loop, req)) is None
    assert loop.request(1.1).seed == 11


def test_stale_and_missing_inputs_are_rejections(loop):
    assert "stale" in str(loop.request(1.3))
    assert loop.set_instruction("  ") is not None and loop.instruction == "pick"
    empty = PolicyLoop(loop.spec, max_age=0.2)
    assert "no instruction" in str(empty.request(0.0))
    with pytest.raises(ValueError):
        PolicyLoop(loop.spec, max_age=0.0)
