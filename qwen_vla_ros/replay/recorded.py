"""What the live system recorded about itself, read from a bag before a replay: /clock, the
policy's observation records and published chunks, its instructions and diagnostics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qwen_vla_ros.replay.bagio import BagReadError, BagSource
from qwen_vla_ros.replay.clock import ClockLog


@dataclass
class Recorded:
    """What the live system recorded about itself (small topics, read before the replay)."""

    clock_log: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    clock_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    infos: list[dict[str, Any]] = field(default_factory=list)
    live_chunks: dict[int, np.ndarray] = field(default_factory=dict)  # stamp (us) -> actions
    diagnostics: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (log ns, ..)
    instructions: list[tuple[int, str]] = field(default_factory=list)  # (log ns, text)



def read_recorded(source: BagSource, store, policy_ns: str, errors: list[str]
                  ) -> tuple[Recorded, list]:
    """One pass over the small topics. The live chunks come back as messages: decoding them
    needs the embodiment, which may itself be read from the observation records."""
    rec = Recorded()
    chunk_msgs = []
    chunk_topic = f"{policy_ns}/action_chunk"
    info_topic = f"{policy_ns}/observation_info"
    instr_topic = f"{policy_ns}/instruction"
    topics = [t for t in ("/clock", chunk_topic, info_topic, "/diagnostics", instr_topic)
              if t in source.topics and t not in source.unknown]
    clocks = ClockLog()
    try:
        for topic, log_ns, raw in source.messages(topics):
            msg = store.deserialize_cdr(raw, source.topics[topic])
            if topic == "/clock":
                clocks.add(log_ns, msg)
            elif topic == info_topic:
                try:
                    rec.infos.append(json.loads(msg.data))
                except json.JSONDecodeError as exc:
                    errors.append(f"{info_topic}: unreadable record skipped ({exc})")
            elif topic == chunk_topic:
                chunk_msgs.append(msg)
            elif topic == instr_topic:
                rec.instructions.append((log_ns, msg.data))
            elif topic == "/diagnostics":
                for st in msg.status:  # policy_node's or navigation_node's status
                    if any(kv.key == "inference_ms_p50" for kv in st.values):
                        rec.diagnostics.append((log_ns,
                                                {kv.key: kv.value for kv in st.values}))
    except BagReadError as exc:
        if str(exc) not in errors:
            errors.append(str(exc))
    rec.clock_log, rec.clock_s = clocks.arrays()
    return rec, chunk_msgs


def decode_live_chunks(rec: Recorded, msgs: list, action_names: list[str], topic: str,
                       errors: list[str]) -> None:
    from qwen_vla_ros.ros.conversions import trajectory_to_chunk

    for msg in msgs:
        try:
            actions, stamp, _ = trajectory_to_chunk(msg, action_names)
        except ValueError as exc:
            errors.append(f"{topic}: chunk skipped ({exc})")
            continue
        rec.live_chunks[key_of(stamp)] = actions


def key_of(stamp: float) -> int:
    """A chunk's observation stamp as an exact key (microseconds)."""
    return round(stamp * 1e6)
