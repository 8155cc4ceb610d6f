"""docs/replay.md's `ros2 bag record` topic set is what the sim demo records (plus /clock and
the sim's own episode topics), so a real-robot recording made from the docs replays like the
demo's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")

DOC = Path(__file__).resolve().parents[2] / "docs" / "replay.md"


def documented_topics() -> set[str]:
    text = DOC.read_text()
    block = re.search(r"ros2 bag record(.*?)```", text, re.S).group(1)
    return set(re.findall(r"(/[\w/]+)", block))


def test_demo_records_the_documented_topic_set():
    from qwen_vla_ros.embodiment.spec import load_embodiment
    from qwen_vla_ros.ros.bag_recorder import demo_topics

    spec = load_embodiment("aloha")
    recorded = {t for t, _, _ in demo_topics(spec, spec.cameras)}
    sim_only = {t for t in recorded if t.startswith("/aloha_sim/")} | {"/clock"}
    assert documented_topics() == recorded - sim_only
