"""The ALOHA description expands, parses, is one tree, and agrees with the embodiment spec
(the adapters' limits) on joint names, limits and gripper units."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from qwen_vla_ros.embodiment.spec import load_embodiment

xacro = pytest.importorskip("xacro")
URDF = Path(__file__).resolve().parents[2] / "urdf" / "aloha.urdf.xacro"


def expand(prefix: str = "") -> ET.Element:
    doc = xacro.process_file(str(URDF), mappings={"prefix": prefix})
    return ET.fromstring(doc.toxml())


def joints(root):
    return {j.get("name"): j for j in root.findall("joint")}


def test_expands_to_one_tree_rooted_at_world():
    root = expand()
    links = {link.get("name") for link in root.findall("link")}
    children = [j.find("child").get("link") for j in root.findall("joint")]
    parents = {j.find("parent").get("link") for j in root.findall("joint")}
    assert len(children) == len(set(children)), "a link has two parents"
    assert links - set(children) == {"world"}
    assert parents <= links and set(children) <= links


def test_joint_names_and_limits_match_the_embodiment():
    spec = load_embodiment("aloha")
    js = joints(expand())
    for d in spec.action:
        assert d.name in js, f"no joint {d.name}"
        limit = js[d.name].find("limit")
        lo, hi = float(limit.get("lower")), float(limit.get("upper"))
        if d.gripper is None:
            assert js[d.name].get("type") == "revolute"
            assert (lo, hi) == pytest.approx((d.lower, d.upper)), d.name
            assert float(limit.get("velocity")) == pytest.approx(d.max_velocity)
        else:  # URDF gripper joint is in rad: the follower map's closed..open
            assert (lo, hi) == pytest.approx((d.gripper.closed, d.gripper.open)), d.name


def test_fingers_mimic_the_gripper_over_the_hardware_finger_travel():
    spec = load_embodiment("aloha")
    js = joints(expand())
    g = spec.dim("left_gripper").gripper
    mimic = js["left_left_finger"].find("mimic")
    k, b = float(mimic.get("multiplier")), float(mimic.get("offset"))
    finger = k * np.array([g.closed, g.open]) + b
    np.testing.assert_allclose(finger, [g.finger.closed, g.finger.open], atol=2e-5)


def test_mounting_poses_face_each_other():
    js = joints(expand())
    left = js["left_mount"].find("origin")
    right = js["right_mount"].find("origin")
    assert float(left.get("xyz").split()[0]) == pytest.approx(-0.469)
    assert float(right.get("xyz").split()[0]) == pytest.approx(0.469)
    assert float(right.get("rpy").split()[2]) == pytest.approx(np.pi, abs=1e-6)


def test_ghost_prefix_renames_links_not_joints():
    root = expand("ghost/")
    assert all(link.get("name").startswith("ghost/") for link in root.findall("link"))
    assert "left_waist" in joints(root)
