"""Shared fixtures. Every test process gets its own ROS_HOME and ROS_DOMAIN_ID, and its own
temporary directory (TMPDIR, inherited by the nodes it starts: launch_ros writes a parameter
file per node there), removed when the session ends."""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import tempfile
import time

_SESSION_TMP = tempfile.mkdtemp(prefix="qvr_test_")
os.environ["TMPDIR"] = tempfile.tempdir = _SESSION_TMP
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("ROS_HOME", os.path.join(_SESSION_TMP, "ros_home"))
os.environ.setdefault("ROS_LOG_DIR", os.path.join(os.environ["ROS_HOME"], "log"))
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (Mesa llvmpipe without a GPU)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from qwen_vla_ros.nodes import spinning  # noqa: E402, F401  (node tests import it from here)


def pytest_collection_modifyitems(session, config, items) -> None:
    """``QVR_TEST_SHUFFLE=<seed>``: run the test files in a shuffled order and each file's
    tests shuffled too (files stay whole, so module fixtures are built once), to check that
    no test depends on another's leftovers. The seed is printed, so a failing order can be
    run again."""
    seed = os.environ.get("QVR_TEST_SHUFFLE")
    if not seed:
        return
    import random

    rng = random.Random(int(seed))
    by_file: dict[str, list] = {}
    for item in items:
        by_file.setdefault(str(item.path), []).append(item)
    files = list(by_file)
    rng.shuffle(files)
    items[:] = [it for f in files for it in rng.sample(by_file[f], len(by_file[f]))]
    print(f"\nQVR_TEST_SHUFFLE={seed}: {len(files)} files, {len(items)} tests, shuffled")


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


_FILES = itertools.count(1)


@pytest.fixture(autouse=True, scope="module")
def _own_domain_then_collect():
    """Each test file in a ROS domain of its own (set before its fixtures call rclpy.init,
    inherited by the processes it starts): nothing an earlier file left in DDS can reach it.
    Seen once in a loaded run: test_faults' fresh adapter got a /clock reading of 103.66 s,
    the sim time an earlier file's stepped clock had reached, against its own rig's 100.0.

    After each test file: a garbage collection. rclpy's LifecycleNode (policy_node) stays
    in the ROS graph after ``destroy_node()`` and ``rclpy.shutdown()`` until it is garbage
    collected (its references form cycles), so a later test of this process that asked the
    graph for ``policy_node`` could get a destroyed one's subscriptions (a shuffled run of
    test_play then the launch tests failed so). Measured with this rclpy: a plain node
    leaves the graph at destroy_node, a LifecycleNode only when collected; ros2/rclpy#1710 is
    a related lingering-node bug."""
    before = os.environ["ROS_DOMAIN_ID"]
    os.environ["ROS_DOMAIN_ID"] = str(100 + (os.getpid() + next(_FILES)) % 100)
    yield
    gc.collect()
    os.environ["ROS_DOMAIN_ID"] = before


@pytest.fixture(scope="session")
def tiny_policy():
    from transformers.utils import logging as hf_logging

    from qwen_vla_ros.model.presets import build_preset

    hf_logging.disable_progress_bar()
    return build_preset("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_policy, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny_policy.save_pretrained(path)
    return path


def camera_images(spec, seed: int = 0, shape=(480, 640, 3)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, shape, dtype=np.uint8) for c in spec.cameras}


def bench_module(name: str):
    """A script of bench/ (not a package) imported as a module, sys.path left as it was."""
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "bench")
    sys.path.insert(0, bench)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(bench)


def wait_for(cond, timeout: float = 10.0) -> bool:
    """Poll ``cond`` (while an executor spins in another thread) until true or timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False

