"""Embodiment descriptions: strict loading, derived views, gripper normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from qwen_vla_ros.embodiment.spec import (
    EmbodimentSpec,
    GripperMap,
    available_embodiments,
    load_embodiment,
)
from qwen_vla_ros.errors import ConfigError


def test_shipped_embodiments_load():
    assert {"aloha", "vx300s_single", "vln"} <= set(available_embodiments())
    aloha = load_embodiment("aloha")
    assert aloha.action_dim == 14 and aloha.control_rate_hz == 50 and aloha.horizon == 50
    assert [d.name for d in aloha.action if d.gripper is not None] == ["left_gripper",
                                                                        "right_gripper"]
    assert aloha.dim("right_waist").robot == "follower_right"
    assert load_embodiment("vln").state_dim == 0


def _aloha_dict():
    return load_embodiment("aloha").to_dict()


def test_round_trip_through_dict():
    spec = load_embodiment("aloha")
    assert EmbodimentSpec.from_dict(spec.to_dict()) == spec
    assert spec.image_pixels is None and "image_pixels" not in spec.to_dict()
    capped = load_embodiment("vln").with_image_pixels(128 * 160)  # what a checkpoint stores
    assert capped.to_dict()["image_pixels"] == 128 * 160
    assert EmbodimentSpec.from_dict(capped.to_dict()) == capped
    assert capped.with_image_pixels(None).image_pixels is None


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(flavour="x"), r"unknown key\(s\) \['flavour'\]"),
    (lambda d: d["action"][0].update(speed=1), r"action\[0\]: unknown key\(s\) \['speed'\]"),
    (lambda d: d.pop("horizon"), r"missing required key\(s\) \['horizon'\]"),
    (lambda d: d["action"][1].update(slot=0), "share a slot"),
    (lambda d: d["action"][1].update(name="left_waist"), "duplicate action dimension"),
    (lambda d: d["action"][0].update(lower=2.0, upper=1.0), "lower 2.0 must be < upper"),
    (lambda d: d.update(kind="teleport"), "kind 'teleport'"),
    (lambda d: d.update(state=["left_knee"]), r"state names \['left_knee'\]"),
    (lambda d: d["action"][6]["gripper"].update(grip=1), r"gripper: unknown key"),
    (lambda d: d.update(image_pixels=512), r"image_pixels must be an integer >= 1024, got 512"),
    (lambda d: d.update(image_pixels="20480"), r"image_pixels must be an integer"),
])
def test_invalid_specs_are_rejected_by_name(mutate, message):
    data = _aloha_dict()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        EmbodimentSpec.from_dict(data)


def test_unknown_embodiment_name_lists_known(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown embodiment 'spot'; known: \['aloha'"):
        load_embodiment("spot")
    bad = tmp_path / "x.yaml"
    bad.write_text(yaml.safe_dump({**_aloha_dict(), "name": "y"}))
    with pytest.raises(ConfigError, match="file name says 'x' but name is 'y'"):
        load_embodiment("x", directory=tmp_path)


def test_slot_width_check():
    with pytest.raises(ConfigError, match="do not fit action width 8"):
        load_embodiment("aloha").check_width(8)


@given(closed=st.floats(-3, 3), span=st.floats(0.01, 3), x=st.floats(0, 1))
def test_gripper_map_round_trips(closed, span, x):
    g = GripperMap(closed=closed, open=closed + span)
    robot = g.to_robot(x)
    assert min(g.closed, g.open) - 1e-9 <= robot <= max(g.closed, g.open) + 1e-9
    np.testing.assert_allclose(g.to_normalised(robot), x, atol=1e-9)


def test_teleop_section_validated():
    data = _aloha_dict()
    data["teleop"]["follower_middle"] = {"leader": "leader_middle"}
    with pytest.raises(ConfigError, match=r"\['follower_middle'\] are not robots"):
        EmbodimentSpec.from_dict(data)
    data = _aloha_dict()
    data["teleop"]["follower_left"]["speed"] = 2
    with pytest.raises(ConfigError, match=r"teleop.follower_left: unknown key"):
        EmbodimentSpec.from_dict(data)
    spec = load_embodiment("aloha")
    assert spec.robots == ["follower_left", "follower_right"]
    assert spec.leader_of("follower_right").robot == "leader_right"
