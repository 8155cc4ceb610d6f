"""ament_python package that also installs with pip into a plain venv."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "qwen_vla_ros"


def _files(pattern: str) -> list[str]:
    return sorted(p for p in glob(pattern, recursive=True) if not p.endswith("/"))


def _tree(top: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing every file under ``top`` with its folder structure."""
    by_dir: dict[str, list[str]] = {}
    for path in _files(f"{top}/**/*"):
        if os.path.isfile(path):
            by_dir.setdefault(os.path.dirname(path), []).append(path)
    return [(f"share/{PACKAGE}/{d}", files) for d, files in sorted(by_dir.items())]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _files("launch/*.py")),
        (f"share/{PACKAGE}/config", _files("config/*.*")),
        (f"share/{PACKAGE}/config/embodiments", _files("config/embodiments/*.yaml")),
        (f"share/{PACKAGE}/config/bringup", _files("config/bringup/*.yaml")),
        (f"share/{PACKAGE}/config/robots", _files("config/robots/*.yaml")),
        (f"share/{PACKAGE}/urdf", _files("urdf/*.*")),
        *_tree("checkpoints"),  # small trained checkpoints (docs/learning.md)
    ],
    install_requires=["setuptools"],
    # GPU kernels for the full-size model (requirements-gpu.txt says why and where)
    extras_require={"gpu": ["flash-linear-attention==0.6.0", "fla-core==0.6.0"]},
    zip_safe=True,
    maintainer="qwen_vla_ros maintainers",
    maintainer_email="maintainers@qwen-vla-ros.invalid",
    description="ROS 2 deployment of a Qwen-VLA-style vision-language-action policy.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "qwen-vla-ros = qwen_vla_ros.cli:main",
            "policy_node = qwen_vla_ros.nodes.policy_node:main",
            "trajectory_adapter = qwen_vla_ros.nodes.trajectory_adapter:main",
            "aloha_adapter = qwen_vla_ros.nodes.aloha_adapter:main",
            "velocity_adapter = qwen_vla_ros.nodes.velocity_adapter:main",
            "mode_manager = qwen_vla_ros.nodes.mode_manager:main",
            "aloha_sim = qwen_vla_ros.nodes.aloha_sim:main",
            "scripted_leader = qwen_vla_ros.nodes.scripted_leader:main",
            "navigation_node = qwen_vla_ros.nodes.navigation_node:main",
            "base_sim = qwen_vla_ros.nodes.base_sim:main",
        ],
    },
)
