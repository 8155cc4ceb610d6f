"""House rules that keep the core reusable: the ROS-free layers never import rclpy or nodes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "qwen_vla_ros"
ROS_FREE = ("model", "embodiment", "runtime")
FORBIDDEN = ("rclpy", "qwen_vla_ros.nodes", "qwen_vla_ros.ros", "builtin_interfaces",
             "rosgraph_msgs")


def _is_ros(module: str) -> bool:
    """rclpy, our ROS layer, or any ROS interface package (*_msgs, *_srvs, *_interfaces)."""
    top = module.split(".")[0]
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN) or \
        top.endswith(("_msgs", "_srvs", "_interfaces"))


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
        bad = [m for m in _imports(path) if _is_ros(m)]
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_runtime_and_embodiment_load_neither_torch_nor_ros():
    """The control-side core (PolicyLoop, executors, supervision, embodiments) runs without
    the model's dependencies: importing all of it loads no torch, transformers or rclpy."""
    import subprocess
    import sys

    modules = sorted(f"qwen_vla_ros.{layer}.{p.stem}" for layer in ("runtime", "embodiment")
                     for p in (PKG / layer).glob("*.py") if p.stem != "__init__")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "bad = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'transformers', 'rclpy'})\nprint(bad)\nsys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


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


BLOCK_ROS = """
import sys
from importlib.abc import MetaPathFinder

class BlockRos(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split('.')[0]
        if top == 'rclpy' or top.endswith(('_msgs', '_srvs', '_interfaces')) or \\
                name.startswith('qwen_vla_ros.nodes'):
            raise ImportError(f'blocked for this test: {name}')
        return None

sys.meta_path.insert(0, BlockRos())
from qwen_vla_ros.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_offline_replay_runs_with_ros_blocked(tmp_path, tiny_checkpoint):
    """Not only imports: a whole `qwen-vla-ros replay` of a bag, with rclpy, every ROS
    interface package and our nodes made unimportable (as on a machine without ROS)."""
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "replay"))
    from test_offline import write_bag

    bag = tmp_path / "bag"
    write_bag(bag)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_ROS, "replay", str(bag), "--checkpoint",
         str(tiny_checkpoint), "--out", str(tmp_path / "out"), "--embodiment", "vx300s_single",
         "--camera-topic", "cam_wrist=/cam_wrist/image_raw/compressed", "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "out" / "report.html").exists()


BLOCK_BAGS_AND_SIM = BLOCK_ROS.replace(
    "name.startswith('qwen_vla_ros.nodes')",
    "name.startswith('qwen_vla_ros.nodes') or top in ('rosbags', 'mujoco', 'mcap')")


def test_bench_model_runs_without_ros_bags_or_sim(tmp_path):
    """`bench model` (bench/gpu.sh on a lent GPU machine that has torch and transformers but
    no rosbags, MuJoCo or ROS): building the CLI imports none of them. On an H200 the parser
    once failed here, importing the replay bag writer for `replay`'s options."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_BAGS_AND_SIM, "bench", "model", "--iters", "1",
         "--warmup", "0", "--json", str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "b.json").read_text())["variants"]["eager"]["latency_ms"]
