"""Offline replay on a bag written independently with rosbags (sqlite3, no /clock, one
compressed camera, a topic of a type nobody can decode), plus damaged and mismatched bags."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.replay.bagio import BagError, BagReadError, open_bag
from qwen_vla_ros.replay.offline import ReplayOptions, replay

T0 = 1_700_000_000.0  # wall-clock stamps, as a real robot's bag has
SECONDS = 4.0
INSTRUCTION = "pick up the cube"


def _stamp(store, t: float):
    sec = int(t)
    return store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=int((t - sec) * 1e9))


def write_bag(path, storage: str = "sqlite3", nan_at: float | None = None) -> None:
    """vx300s_single: /cam_high/image_raw (Image, 15 Hz), /cam_wrist/image_raw/compressed
    (jpeg, 15 Hz), /joint_states (50 Hz), /policy_node/instruction, /vendor/blob (no
    definition stored)."""
    from PIL import Image as PILImage
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    T = store.types
    Header = T["std_msgs/msg/Header"]
    spec = load_embodiment("vx300s_single")
    rng = np.random.default_rng(0)
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    writer = Writer(path, version=9, storage_plugin=plugin)
    writer.open()
    c_img = writer.add_connection("/cam_high/image_raw", "sensor_msgs/msg/Image",
                                  typestore=store)
    c_jpg = writer.add_connection("/cam_wrist/image_raw/compressed",
                                  "sensor_msgs/msg/CompressedImage", typestore=store)
    c_js = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=store)
    c_in = writer.add_connection("/policy_node/instruction", "std_msgs/msg/String",
                                 typestore=store)
    c_blob = writer.add_connection("/vendor/blob", "vendor_msgs/msg/Blob", msgdef="",
                                   rihs01="RIHS01_" + "0" * 64)
    events = [(k / 50.0, "js") for k in range(int(SECONDS * 50))]
    events += [(k / 15.0 + 0.003, "img") for k in range(int(SECONDS * 15))]
    events += [(0.01, "instr"), (1.0, "blob")]
    names = [d.joint for d in spec.action]
    for t, kind in sorted(events):
        ns = int((T0 + t) * 1e9)
        head = Header(stamp=_stamp(store, T0 + t), frame_id="")
        if kind == "js":
            q = 0.2 * np.sin(t + np.arange(len(names)))
            if nan_at is not None and nan_at <= t < nan_at + 0.5:
                q[1] = np.nan
            msg = T["sensor_msgs/msg/JointState"](header=head, name=names, position=q,
                                                  velocity=np.zeros(0), effort=np.zeros(0))
            writer.write(c_js, ns, store.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
        elif kind == "img":
            rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            msg = T["sensor_msgs/msg/Image"](header=head, height=48, width=64, encoding="rgb8",
                                             is_bigendian=0, step=64 * 3, data=rgb.reshape(-1))
            writer.write(c_img, ns, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            buf = io.BytesIO()
            PILImage.fromarray(rgb).save(buf, format="JPEG")
            jpg = np.frombuffer(buf.getvalue(), np.uint8)
            msg = T["sensor_msgs/msg/CompressedImage"](header=head, format="jpeg", data=jpg)
            writer.write(c_jpg, ns, store.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
        elif kind == "instr":
            msg = T["std_msgs/msg/String"](data=INSTRUCTION)
            writer.write(c_in, ns, store.serialize_cdr(msg, "std_msgs/msg/String"))
        else:
            writer.write(c_blob, ns, b"\x00\x01\x00\x00garbage")
    writer.close()


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("indep") / "bag"
    write_bag(path)
    return path


def options(bag, out, checkpoint, **kw) -> ReplayOptions:
    base = dict(bag=bag, checkpoint=checkpoint, out=out, embodiment="vx300s_single",
                camera_topics={"cam_wrist": "/cam_wrist/image_raw/compressed"},
                progress=False)
    base.update(kw)
    return ReplayOptions(**base)


def test_replay_of_an_independent_sqlite3_bag(bag, tmp_path, tiny_policy, tiny_checkpoint):
    src = open_bag(bag)
    assert src.storage == "sqlite3" and src.indexed
    res = replay(options(bag, tmp_path / "a", tiny_checkpoint), policy=tiny_policy,
                 log=lambda m: None)
    rep = res.report
    # 5 Hz over 4 s of bag: ticks from 0.2 s; the first one may predate an image.
    assert rep["tick_source"] == "rate" and 18 <= rep["ticks"] <= 20
    assert rep["chunks"] >= rep["ticks"] - 1, rep["worst"]["rejections"]
    assert not res.incomplete
    # The undecodable topic is named, not fatal.
    assert any("/vendor/blob" in e and "vendor_msgs/msg/Blob" in e for e in res.errors)
    # Observation age: the newest 15 Hz frame is at most ~67 ms old at a tick.
    assert 0 <= rep["observation_age_ms"]["p99"] <= 70
    # Output bag: chunks with the embodiment's joint names, ghost joint states in robot units.
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    with Reader(tmp_path / "a" / "replay_bag") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts["/replay/action_chunk"] == rep["chunks"]
        assert counts["/replay/predicted_joint_states"] >= rep["chunks"]
        conns = [c for c in reader.connections if c.topic == "/replay/action_chunk"]
        _, log_ns, raw = next(reader.messages(connections=conns))
        msg = store.deserialize_cdr(raw, "trajectory_msgs/msg/JointTrajectory")
        assert msg.joint_names == load_embodiment("vx300s_single").action_names
        assert len(msg.points) == 50
        # Logged next to the recorded data (wall-clock bag: log time = clock).
        assert abs(log_ns * 1e-9 - T0) < SECONDS + 1
    for name in ("report.md", "report.html", "report.json", "joints.png", "timeline.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0, name
    assert "Worst chunk-boundary jumps" in (tmp_path / "a" / "report.md").read_text()


def test_replay_is_deterministic_and_windowed(bag, tmp_path, tiny_policy, tiny_checkpoint):
    a = replay(options(bag, tmp_path / "a", tiny_checkpoint, start=1.0, end=2.5),
               policy=tiny_policy, log=lambda m: None)
    b = replay(options(bag, tmp_path / "b", tiny_checkpoint, start=1.0, end=2.5),
               policy=tiny_policy, log=lambda m: None)
    assert [r.t for r in a.ticks] == [r.t for r in b.ticks]
    assert all(1.0 <= r.t <= 2.5 for r in a.ticks) and len(a.ticks) in (7, 8)
    for ra, rb in zip(a.chunks, b.chunks, strict=True):
        np.testing.assert_array_equal(ra.actions, rb.actions)
    c = replay(options(bag, tmp_path / "c", tiny_checkpoint, start=1.0, end=2.5, seed=7),
               policy=tiny_policy, log=lambda m: None)
    assert not np.allclose(a.chunks[0].actions, c.chunks[0].actions)


def test_nan_joint_states_are_rejected_ticks_not_a_crash(tmp_path, tiny_policy,
                                                         tiny_checkpoint):
    path = tmp_path / "nan"
    write_bag(path, storage="mcap", nan_at=2.0)
    res = replay(options(path, tmp_path / "o", tiny_checkpoint), policy=tiny_policy,
                 log=lambda m: None)
    bad = [r for r in res.ticks if r.rejection]
    assert bad and all(2.0 <= r.t <= 2.6 for r in bad), [(r.t, r.rejection) for r in bad]
    assert all("non-finite" in r.rejection or "no valid joint state" in r.rejection
               for r in bad)
    assert any(r.actions is not None and r.t > 2.6 for r in res.ticks), "did not recover"
    spans = res.report["worst"]["rejections"]
    assert spans and spans[0]["t"] >= 2.0


def test_a_diverged_checkpoint_replays_as_dropped_chunks_not_a_crash(bag, tmp_path,
                                                                     tiny_checkpoint):
    """The tiny checkpoint with its decoder's weights NaN (a training run that diverged):
    every tick's chunk is dropped with the reason, written to /replay/status, and nothing
    goes to the action or predicted-joint-state topics."""
    import torch

    from qwen_vla_ros.model.policy import QwenVLAPolicy

    policy = QwenVLAPolicy.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        for p in policy.decoder.parameters():
            p.fill_(float("nan"))
    res = replay(options(bag, tmp_path / "nan_model", tiny_checkpoint, end=1.5),
                 policy=policy, log=lambda m: None)
    assert res.ticks and all(r.rejection == "model output contains NaN/inf: chunk dropped"
                             and r.actions is None for r in res.ticks), \
        [(r.t, r.rejection) for r in res.ticks]
    assert res.chunks == [] and not [e for e in res.errors if "/vendor/blob" not in e]
    counts = open_bag(tmp_path / "nan_model" / "replay_bag").counts
    assert counts.get("/replay/status") == len(res.ticks), counts
    assert counts.get("/replay/action_chunk", 0) == 0
    assert counts.get("/replay/predicted_joint_states", 0) == 0


def test_missing_topic_is_named_and_recorded_data_kept(bag, tmp_path, tiny_policy,
                                                       tiny_checkpoint):
    res = replay(options(bag, tmp_path / "m", tiny_checkpoint,
                         camera_topics={"cam_wrist": "/cam_wrist/image_raw"}),
                 policy=tiny_policy, log=lambda m: None)
    assert res.incomplete and "/cam_wrist/image_raw (camera 'cam_wrist') is not in the bag" \
        in res.incomplete[0]
    assert "/cam_wrist/image_raw/compressed" in res.incomplete[0]  # lists what there is
    rep = json.loads((tmp_path / "m" / "report.json").read_text())
    assert rep["ticks"] == 0 and any("not in the bag" in e for e in rep["errors"])


def test_cli_exit_codes(bag, tmp_path, tiny_checkpoint):
    from qwen_vla_ros.cli import main

    assert main(["replay", str(tmp_path / "nope"), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "o")]) == 2
    assert main(["replay", str(bag), "--checkpoint", str(tiny_checkpoint), "--out",
                 str(tmp_path / "o"), "--embodiment", "vx300s_single", "--no-progress"]) == 2
    assert main(["replay", str(bag), "--checkpoint", str(tiny_checkpoint), "--out",
                 str(tmp_path / "o"), "--embodiment", "vx300s_single", "--no-progress",
                 "--camera-topic", "cam_wrist=/cam_wrist/image_raw/compressed",
                 "--end", "1.0"]) == 0


def test_cli_bad_checkpoint_is_one_line_exit_2_and_no_output_left(bag, tmp_path, capsys,
                                                                   tiny_checkpoint):
    from qwen_vla_ros.cli import main

    bad = tmp_path / "bad_ckpt"
    shutil.copytree(tiny_checkpoint, bad)
    cfg = bad / "backbone" / "config.json"
    cfg.write_text(cfg.read_text()[:100])  # a truncated copy
    capsys.readouterr()
    for argv, out in ((["replay", str(bag), "--checkpoint", str(bad), "--no-progress"], "r"),
                      (["demo", "--checkpoint", str(bad), "--seconds", "1"], "d")):
        assert main([*argv, "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "config.json" in err[0] and "backbone" in err[0], err
        assert not (tmp_path / out).exists(), f"{argv[0]} left {out}/ behind"
    assert main(["play", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0], err


def test_truncated_mcap_keeps_what_was_readable(tmp_path, tiny_policy, tiny_checkpoint):
    whole = tmp_path / "whole"
    write_bag(whole, storage="mcap")
    cut = tmp_path / "cut"
    cut.mkdir()
    data = next(whole.glob("*.mcap")).read_bytes()
    (cut / "cut.mcap").write_bytes(data[: int(len(data) * 0.6)])  # no metadata.yaml either
    src = open_bag(cut)
    assert not src.indexed and any("truncated" in w for w in src.warnings)
    full = open_bag(whole)
    got = []
    with pytest.raises(BagReadError, match="truncated"):
        for m in src.messages():
            got.append(m)
    want = list(full.messages())
    assert 0 < len(got) < len(want)
    assert [(t, r) for _, t, r in got] == [(t, r) for _, t, r in want[: len(got)]]
    res = replay(options(cut, tmp_path / "o", tiny_checkpoint), policy=tiny_policy,
                 log=lambda m: None)
    assert res.incomplete and "truncated" in res.incomplete[0]
    assert res.report["chunks"] > 3  # the readable part was replayed
    assert (tmp_path / "o" / "report.html").exists()


def test_not_a_bag(tmp_path):
    (tmp_path / "x.mcap").write_bytes(b"not an mcap file at all")
    with pytest.raises(BagError, match="not an MCAP file"):
        list(open_bag(tmp_path).messages())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BagError, match="not a rosbag2"):
        open_bag(empty)
    shutil.rmtree(empty)


def test_replay_cli_is_made_from_the_options(tmp_path):
    """One source: every CLI default is the dataclass default, parsed values land in the
    fields, and a malformed KEY=VALUE is a ValueError naming the flag."""
    import dataclasses

    from qwen_vla_ros.cli import build_parser
    from qwen_vla_ros.options import from_args

    args = build_parser().parse_args(["replay", "b", "--checkpoint", "c", "--out", "o",
                                      "--rate", "7.5", "--camera-topic", "cam=/t",
                                      "--no-progress"])
    opts = from_args(ReplayOptions, args)
    assert (opts.bag, opts.rate_hz, opts.camera_topics, opts.progress) == \
        (Path("b"), 7.5, {"cam": "/t"}, False)
    plain = from_args(ReplayOptions, build_parser().parse_args(
        ["replay", "b", "--checkpoint", "c", "--out", "o"]))
    for f in dataclasses.fields(ReplayOptions):
        if f.default is not dataclasses.MISSING:
            assert getattr(plain, f.name) == f.default, f.name
    bad = build_parser().parse_args(["replay", "b", "--checkpoint", "c", "--out", "o",
                                     "--camera-topic", "nonsense"])
    with pytest.raises(ValueError, match="--camera-topic"):
        from_args(ReplayOptions, bad)
