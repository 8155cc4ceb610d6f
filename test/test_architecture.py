"""House rules that keep the core reusable: the ROS-free layers never import rclpy or nodes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "qwen_vla_ros"
ROS_FREE = ("model", "embodiment", "runtime")
FORBIDDEN = ("rclpy", "qwen_vla_ros.nodes", "sensor_msgs", "std_msgs", "trajectory_msgs")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ROS_FREE)
def test_core_layer_is_ros_free(layer):
    files = sorted((PKG / layer).rglob("*.py"))
    assert files, f"no files in {layer}"
    for path in files:
        bad = [m for m in _imports(path) if any(m == f or m.startswith(f + ".")
                                                  for f in FORBIDDEN)]
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"


@pytest.mark.parametrize("modules", ["qwen_vla_ros.replay.offline, qwen_vla_ros.replay.report",
                                     "qwen_vla_ros.learning.dataset, qwen_vla_ros.learning.train"])
def test_offline_tools_need_no_ros_install(modules):
    """`qwen-vla-ros replay` and training run where only rosbags is installed: importing them
    and their whole dependency chain pulls in no rclpy and no ROS message packages."""
    import subprocess
    import sys

    code = (f"import sys; import {modules}; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'sensor_msgs', 'std_msgs', 'trajectory_msgs', 'builtin_interfaces')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
