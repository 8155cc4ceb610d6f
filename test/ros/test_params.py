"""Node parameters from one dataclass: declared with descriptions, validated at start-up, and
later changes checked (refused with the reason, or because the node reads them once)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402

from qwen_vla_ros.errors import ConfigError  # noqa: E402
from qwen_vla_ros.params import one_of, param, positive, validate  # noqa: E402
from qwen_vla_ros.ros.params import declare, declare_fields, guard, keyed  # noqa: E402

pytestmark = pytest.mark.ros


@dataclass
class DemoParams:
    rate_hz: float = param(10.0, "how often", check=positive)
    output: str = param("twist", "what to publish", check=one_of("twist", "array"))
    drop: tuple[str, ...] = param(("",), "topics not published")

    def __post_init__(self) -> None:
        validate(self)


@pytest.fixture()
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def test_declared_with_descriptions_and_overrides(ros):
    node = rclpy.create_node("demo", parameter_overrides=[Parameter("rate_hz", value=5.0)])
    params = declare(node, DemoParams)
    assert params == DemoParams(rate_hz=5.0)
    described = node.describe_parameters(["rate_hz", "output", "drop"])
    assert [d.description for d in described] == ["how often", "what to publish",
                                                  "topics not published"]
    node.destroy_node()


def test_a_bad_start_up_value_is_an_error_naming_it(ros):
    node = rclpy.create_node("demo", parameter_overrides=[Parameter("output", value="video")])
    with pytest.raises(ConfigError, match="output must be one of"):
        declare(node, DemoParams)
    node.destroy_node()


def test_changes_are_checked_and_read_once_parameters_are_refused(ros):
    node = rclpy.create_node("demo")
    declare(node, DemoParams, live=("drop", "rate_hz"))
    ok, bad, fixed = node.set_parameters([Parameter("drop", value=["/cam"]),
                                          Parameter("rate_hz", value=-1.0),
                                          Parameter("output", value="array")])
    assert ok.successful and node.get_parameter("drop").value == ["/cam"]
    assert not bad.successful and "rate_hz must be > 0" in bad.reason
    assert node.get_parameter("rate_hz").value == 10.0
    assert not fixed.successful and "read at start-up: restart demo" in fixed.reason
    node.destroy_node()


def test_a_lifecycle_node_takes_valid_changes_for_its_next_configure(ros):
    node = rclpy.create_node("demo")
    declare_fields(node, DemoParams)
    guard(node, DemoParams, reread_at="configure")
    good, bad = node.set_parameters([Parameter("output", value="array"),
                                     Parameter("output", value="video")])
    assert good.successful and not bad.successful and "output must be one of" in bad.reason
    assert node.get_parameter("output").value == "array"
    node.destroy_node()


def test_keyed_parameters_per_camera_and_unknown_keys_named(ros):
    node = rclpy.create_node("keyed", parameter_overrides=[
        Parameter("camera_topics.cam_high", value="/top/image")])
    cams = ["cam_high", "cam_low"]
    assert keyed(node, "camera_topics", "cam_high", "cam_high/image_raw", "d", cams) == \
        "/top/image"
    assert keyed(node, "camera_topics", "cam_low", "cam_low/image_raw", "d", cams) == \
        "cam_low/image_raw"
    assert node.describe_parameter("camera_topics.cam_low").description == "d"
    # asked again (a second configure): read, not declared twice
    assert keyed(node, "camera_topics", "cam_low", "other", "d", cams) == "cam_low/image_raw"
    node.destroy_node()
    node = rclpy.create_node("keyed", parameter_overrides=[
        Parameter("camera_topics.cam_side", value="/side")])
    with pytest.raises(ValueError, match=r"\['cam_side'\], which are not cameras of 'x'"):
        keyed(node, "camera_topics", "cam_high", "a", "d", cams, "cameras of 'x'")
    node.destroy_node()
