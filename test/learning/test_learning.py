"""The learning loop on the simulated ALOHA: collect two scripted episodes through the ROS
path, build samples from the bags, train briefly, resume, and evaluate closed loop."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gym_aloha")
pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")

from conftest import bench_module

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.learning.dataset import (
    DatasetError,
    DatasetSettings,
    Skipped,
    load_episodes,
    read_episode,
)
from qwen_vla_ros.learning.train import (
    Samples,
    TrainConfig,
    split_episodes,
    train,
)

pytestmark = [pytest.mark.slow, pytest.mark.ros]
SPEC = load_embodiment("aloha")
SEEDS = (500, 501)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from qwen_vla_ros.collect import collect

    out = tmp_path_factory.mktemp("demos")
    summary = collect(out, episodes=len(SEEDS), seed_start=SEEDS[0], rate_factor=2.0,
                      progress=False, log=lambda _: None)
    return out, summary


def settings(**kw) -> DatasetSettings:
    return DatasetSettings(include_failed=True, **kw)  # keep both whatever the sim did


def test_collect_writes_one_bag_per_episode_with_its_metadata(demos):
    from rosbags.highlevel import AnyReader

    out, summary = demos
    assert summary["episodes"] == 2 and summary["seeds"] == list(SEEDS)
    assert json.loads((out / "collect.json").read_text())["seeds"] == list(SEEDS)
    for seed in SEEDS:
        with AnyReader([out / f"episode_{seed:05d}"]) as reader:  # an independent reader
            conns = [c for c in reader.connections if c.topic == "/collect/episode"]
            (_, _, raw), = list(reader.messages(connections=conns))
            meta = json.loads(reader.deserialize(raw, conns[0].msgtype).data)
            counts = {c.topic: c.msgcount for c in reader.connections}
        assert meta["seed"] == seed and isinstance(meta["success"], bool)
        assert counts["/cam_high/image_raw"] > 50 and counts["/follower_left/joint_states"] > 300
        # Commands at 50 Hz over the ~6 s of teleop; a loaded machine drops some adapter ticks
        # (287 seen beside a training run), which is what was sent, so what is recorded.
        assert counts["/follower_left/commands/joint_group"] > 200


def test_samples_come_from_the_teleop_window_in_embodiment_units(demos, tmp_path):
    out, _ = demos
    eps, skipped = load_episodes([out], SPEC, settings(), cache=tmp_path / "cache")
    assert len(eps) == 2 and skipped == []
    for ep in eps:
        assert 60 <= len(ep) <= 95  # 10 Hz camera frames over a 9 s episode
        assert ep.states.shape == (len(ep), 14) and ep.actions.shape == (len(ep), 50, 14)
        assert np.all(np.isfinite(ep.states)) and np.all(np.isfinite(ep.actions))
        grips = ep.actions[..., [6, 13]]
        assert grips.min() > -0.05 and grips.max() < 1.05  # normalised openings
        assert ep.instruction == "transfer the red cube to the other arm"
        # the target starts at the command sent at the observation time: near the state
        assert np.abs(ep.actions[:, 0, :6] - ep.states[:, :6]).mean() < 0.1
    # cached: the second read comes from disk and equals the first
    again, _ = load_episodes([out], SPEC, settings(), cache=tmp_path / "cache")
    np.testing.assert_array_equal(again[0].actions, eps[0].actions)
    np.testing.assert_array_equal(np.asarray(again[0].frames["cam_low"][3]),
                                  np.asarray(eps[0].frames["cam_low"][3]))
    assert len(list((tmp_path / "cache").iterdir())) == 2
    # a second training filling the same cache at once writes the same entry second: it
    # keeps the first one's and leaves nothing of its own behind
    from qwen_vla_ros.learning import dataset

    entries = sorted((tmp_path / "cache").iterdir())
    first = dataset._load(entries[0])
    dataset._save(next(e for e in eps if e.bag != first.bag), entries[0])
    assert sorted((tmp_path / "cache").iterdir()) == entries
    np.testing.assert_array_equal(dataset._load(entries[0]).states, first.states)
    load_episodes([out], SPEC, settings(target="states"), cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 4  # other settings, other entries


def test_each_episode_starts_where_its_demonstration_starts(demos, tmp_path):
    """The first episode after the adapter's start-up, the second after a reset: the first
    sample shows the arms at the start pose, and 0.1-0.3 s in, the commands follow the
    leader's first steps (not a leader mid-way, not the previous episode's end pose). The
    very first command may still be on the adapter's short ramp from the measured pose."""
    from qwen_vla_ros.sim.aloha import START_ARM
    from qwen_vla_ros.sim.scripted import scripted_transfer_cube

    out, _ = demos
    eps, _ = load_episodes([out], SPEC, settings())
    arm = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    for ep in sorted(eps, key=lambda e: e.meta["seed"]):
        demo = scripted_transfer_cube(ep.meta["seed"])[:, arm]
        # one of the next three samples' commands is on the demonstration's first 0.5 s
        # (before: 0.7-0.9 s in for a first episode, or the previous end pose)
        off = [np.abs(demo[:25] - ep.actions[n, 0, arm]).max(axis=1).min() for n in (1, 2, 3)]
        assert min(off) < 0.03, (ep.meta["seed"], off)
        # the arms start at the start pose, already moving (before: up to 1.24 rad away)
        assert np.abs(ep.states[0, arm] - np.tile(START_ARM, 2)).max() < 0.4, ep.meta["seed"]


def test_bad_data_is_named(demos, tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    with pytest.raises(DatasetError, match="no rosbag2 bag in it"):
        load_episodes([tmp_path], SPEC, settings())
    with pytest.raises(DatasetError, match="no such file"):
        load_episodes([tmp_path / "nope"], SPEC, settings())
    store = get_typestore(Stores.ROS2_JAZZY)
    bag = tmp_path / "clock_only"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/clock", "rosgraph_msgs/msg/Clock", typestore=store)
        msg = store.types["rosgraph_msgs/msg/Clock"](
            clock=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0))
        w.write(c, 1, store.serialize_cdr(msg, "rosgraph_msgs/msg/Clock"))
    skipped = read_episode(bag, SPEC, settings())
    assert isinstance(skipped, Skipped) and "missing topic(s)" in skipped.reason \
        and "/cam_high/image_raw" in skipped.reason


@pytest.fixture(scope="module")
def trained(demos, tmp_path_factory):
    out, _ = demos
    ckpt = tmp_path_factory.mktemp("ckpt") / "run"
    cfg = TrainConfig(steps=120, batch=4, lr=1e-3, warmup=10, val_every=60,
                      checkpoint_every=1000, seed=0)
    result = train([out], ckpt, cfg, settings=settings(), progress=False,
                   log=lambda _: None)
    return ckpt, result


def test_a_short_run_lowers_the_held_out_loss(trained):
    """Validation episodes are never trained on; their flow-matching loss (fixed samples,
    fixed noise) falls. The open-loop action error against predicting the mean needs a
    longer run than a test can afford: bench/learning.py measures it (docs/benchmarks.md)."""
    _, result = trained
    assert result["val_loss"] < 0.8 * result["initial_val_loss"], result


def test_the_logged_dataset_settings_come_back_equal(trained):
    """train_log.json keeps the dataset settings (JSON lists); they rebuild as they were."""
    ckpt, _ = trained
    logged = json.loads((ckpt / "train_log.json").read_text())["dataset"]
    back = DatasetSettings.from_dict(logged)
    assert isinstance(back.resize, tuple) and isinstance(back.modes, tuple)
    assert json.loads(json.dumps(asdict(back))) == logged
    with_topics = DatasetSettings(camera_topics=(("cam_high", "/top/image"),), resize=None)
    assert DatasetSettings.from_dict(json.loads(json.dumps(asdict(with_topics)))) == \
        with_topics


def test_norm_stats_come_from_the_training_episodes(demos, trained):
    from qwen_vla_ros.model.normalize import NormStats
    from qwen_vla_ros.model.policy import QwenVLAPolicy

    out, _ = demos
    ckpt, result = trained
    eps, _ = load_episodes([out], SPEC, settings())
    train_eps, _ = split_episodes(eps, 0.1, 0)
    assert [str(e.bag) for e in train_eps] == result["train_episodes"]
    expected = NormStats.from_dataset(SPEC, np.concatenate([e.states for e in train_eps]),
                                      np.concatenate([e.actions for e in train_eps]))
    loaded = QwenVLAPolicy.from_pretrained(ckpt).norm_stats
    for field in ("state", "action"):
        for key in ("mean", "std"):
            np.testing.assert_allclose(loaded.get("aloha", field, key, 14),
                                       expected.get("aloha", field, key, 14))


def test_resume_continues_to_the_same_weights(demos, tmp_path):
    from safetensors.numpy import load_file

    out, _ = demos
    # Augmentations on: their random draws are part of what a resumed run restores.
    cfg = dict(batch=2, warmup=2, val_every=100, checkpoint_every=1000, seed=3, state_noise=0.1,
               shift_pixels=4)
    quiet = dict(settings=settings(), progress=False, log=lambda _: None)
    train([out], tmp_path / "a", TrainConfig(steps=6, **cfg), **quiet)
    train([out], tmp_path / "b", TrainConfig(steps=3, **cfg), **quiet)
    resumed = train([out], tmp_path / "b", TrainConfig(steps=6, **cfg), resume=True, **quiet)
    assert resumed["steps"] == 6
    a = load_file(str(tmp_path / "a" / "decoder.safetensors"))
    b = load_file(str(tmp_path / "b" / "decoder.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    log = json.loads((tmp_path / "b" / "train_log.json").read_text())
    assert [h["step"] for h in log["history"] if "loss" in h] == list(range(1, 7))
    seconds = [h["seconds"] for h in log["history"]]
    assert seconds == sorted(seconds), "the resumed run's clock went back"
    # --minutes is the whole run's budget: resumed with the minutes it has already trained,
    # it stops at once (before, it trained that long again from the top of the cosine)
    again = train([out], tmp_path / "b", TrainConfig(minutes=seconds[-1] / 60, **cfg),
                  resume=True, **quiet)
    assert again["steps"] == 6


def test_keep_every_leaves_the_weights_of_each_step(demos, tmp_path):
    """--keep-every 2 over 4 steps: step_000002 and step_000004 beside the run, each a
    checkpoint that loads, the last one the run's final weights, the first one not."""
    from safetensors.numpy import load_file

    from qwen_vla_ros.model.policy import QwenVLAPolicy

    out, _ = demos
    repo = Path(__file__).resolve().parents[2]
    train([out], tmp_path / "run", TrainConfig(steps=4, batch=2, warmup=1, val_every=100,
                                               checkpoint_every=1000, keep_every=2),
          settings=settings(), progress=False, log=lambda _: None)
    kept = tmp_path / "run_steps"
    assert sorted(p.name for p in kept.iterdir()) == ["step_000002", "step_000004"]
    final = load_file(str(tmp_path / "run" / "decoder.safetensors"))
    for name, same in (("step_000002", False), ("step_000004", True)):
        QwenVLAPolicy.from_pretrained(kept / name)
        weights = load_file(str(kept / name / "decoder.safetensors"))
        assert all(np.array_equal(weights[k], final[k]) for k in final) == same, name
        log = json.loads((kept / name / "train_log.json").read_text())
        assert log["history"][-1]["step"] == int(name[5:])
    # bench/checkpoints.py judges them in step order, then the run's own, by step and loss
    proc = subprocess.run([sys.executable, "bench/checkpoints.py", "--steps", str(kept),
                           "--also", str(tmp_path / "run"), "--out", str(tmp_path / "judge"),
                           "--eval-args", "--task transfer_cube --episodes 2", "--dry-run"],
                          capture_output=True, text=True, cwd=repo, check=True)
    planned = [Path(line.split("--out ")[1].split()[0]).name
               for line in proc.stdout.splitlines() if line.startswith("$ ")]
    assert planned == ["step_000002", "step_000004", f"{tmp_path.name}_run"], proc.stdout
    step_and_val_loss = bench_module("checkpoints").step_and_val_loss
    step, val = step_and_val_loss(kept / "step_000004")  # validated at the last step
    assert step == 4 and val is not None and step_and_val_loss(tmp_path / "run") == (4, val)
    early = json.loads((kept / "step_000002" / "train_log.json").read_text())["history"]
    assert step_and_val_loss(kept / "step_000002") == (2, early[0]["val_loss"])  # step 0's


def test_train_refuses_what_it_cannot_use(demos, tmp_path):
    from qwen_vla_ros.errors import ConfigError

    out, _ = demos
    with pytest.raises(ConfigError, match=r"no train_state\.pt"):
        train([out], tmp_path / "y", TrainConfig(steps=1), resume=True, settings=settings(),
              progress=False, log=lambda _: None)
    with pytest.raises(ConfigError, match="lead embodiment 'aloha': it must be one of two"):
        train([out], tmp_path / "y", TrainConfig(steps=1, lead="aloha", lead_share=0.5),
              settings=settings(), progress=False, log=lambda _: None)
    with pytest.raises(ConfigError, match="instruction_first shapes a new model"):
        train([out], tmp_path / "y", TrainConfig(steps=1), init=tmp_path / "any",
              instruction_first=True, settings=settings(), progress=False, log=lambda _: None)
    with pytest.raises(ConfigError, match="prompt_summary shapes a new model"):
        train([out], tmp_path / "y", TrainConfig(steps=1), resume=True, prompt_summary=True,
              settings=settings(), progress=False, log=lambda _: None)
    proc = subprocess.run([sys.executable, "-m", "qwen_vla_ros.cli", "train", "--data",
                           f"aloha={out}", "--out", str(tmp_path / "w"), "--steps", "1",
                           "--lead", "aloha=half"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--lead: expected a share in (0, 1), got 'half'" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "w").exists()
    proc = subprocess.run([sys.executable, "-m", "qwen_vla_ros.cli", "train", "--data",
                           f"aloha={out}", "--out", str(tmp_path / "v"), "--steps", "1",
                           "--weights", "aloha=heavy"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--weights: expected a number, got 'heavy'" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "v").exists()
    proc = subprocess.run([sys.executable, "-m", "qwen_vla_ros.cli", "train", "--data",
                           str(tmp_path / "empty"), "--out", str(tmp_path / "z"), "--steps",
                           "1", "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no such file or directory" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "z").exists()


def test_a_checkpoint_can_see_fewer_cameras_at_a_higher_resolution(demos, tmp_path):
    """train --cameras cam_high --image-pixels: the checkpoint's body sees the top camera
    only, each frame resized to about that many pixels, and predicts from that camera
    alone; a camera the body does not have, or a new shape for an existing model, is
    refused by name."""
    from qwen_vla_ros.errors import ConfigError
    from qwen_vla_ros.model.policy import QwenVLAPolicy

    out, _ = demos
    cfg = TrainConfig(steps=2, batch=2, val_every=100, checkpoint_every=100, seed=0)
    quiet = {"settings": settings(), "progress": False, "log": lambda _: None}
    result = train([out], tmp_path / "top", cfg, cameras=["cam_high"],
                   image_pixels=256 * 320, **quiet)
    assert result["cameras"] == ["cam_high"] and result["image_pixels"] == 256 * 320
    policy = QwenVLAPolicy.from_pretrained(tmp_path / "top")
    assert policy.spec("aloha").cameras == ("cam_high",)
    episodes, _ = load_episodes([out], policy.spec("aloha"), DatasetSettings(
        include_failed=True, resize=policy.backbone.pixels.resize_rule))
    frames = episodes[0].frames
    assert list(frames) == ["cam_high"] and frames["cam_high"].shape[1:] == (256, 320, 3)
    obs, _ = Samples(episodes, "aloha", ("cam_high",)).get(0)
    assert list(obs.images) == ["cam_high"]
    chunk = policy.predict(obs, seed=0)
    assert chunk.actions.shape == (SPEC.horizon, SPEC.action_dim)
    assert np.all(np.isfinite(chunk.actions))
    with pytest.raises(ConfigError, match=r"cameras \['cam_top'\].*cam_high"):
        train([out], tmp_path / "x", cfg, cameras=["cam_top"], **quiet)
    with pytest.raises(ConfigError, match="below the checkpoint's 81920"):
        train([out], tmp_path / "y", cfg, init=tmp_path / "top", image_pixels=128 * 160,
              **quiet)


def test_a_checkpoint_learns_a_new_body_at_larger_frames(demos, tmp_path):
    """train --init VLN_CKPT --data aloha=... --image-pixels N: a checkpoint that knows only
    the mobile base learns the arm (its prompt and spec from config/embodiments), the arm's
    frames at N pixels, while the base's frames and its norm statistics stay as they were;
    the new checkpoint is trained for both."""
    from qwen_vla_ros.model.policy import QwenVLAPolicy
    from qwen_vla_ros.model.presets import build_preset

    out, _ = demos
    base = build_preset("tiny", ["vln"])
    base.trained_embodiments = ["vln"]  # as a VLN-only training run leaves it
    base.save_pretrained(tmp_path / "vln_ckpt")
    lines: list[str] = []
    cfg = TrainConfig(steps=2, batch=2, val_every=100, checkpoint_every=100, seed=0)
    train({"aloha": [out]}, tmp_path / "both", cfg, init=tmp_path / "vln_ckpt",
          embodiment="aloha", cameras=["cam_high"], image_pixels=256 * 320,
          settings=settings(), progress=False, log=lines.append)
    assert any("aloha is new to" in line for line in lines), lines
    both = QwenVLAPolicy.from_pretrained(tmp_path / "both")
    assert sorted(both.embodiments) == ["aloha", "vln"]
    assert both.trained_embodiments == ["aloha", "vln"]
    assert both.config.image_pixels == 256 * 320
    assert both.spec("vln").image_pixels == base.config.image_pixels
    assert both.spec("aloha").image_pixels is None and both.spec("aloha").cameras == (
        "cam_high",)
    assert both.norm_stats.to_dict()["vln"] == base.norm_stats.to_dict()["vln"]
    obs, _ = Samples(load_episodes([out], both.spec("aloha"), DatasetSettings(
        include_failed=True, resize=both.backbone.pixels.resize_rule))[0], "aloha",
        ("cam_high",)).get(0)
    assert obs.images["cam_high"].shape == (256, 320, 3)
    assert np.all(np.isfinite(both.predict(obs, seed=0).actions))


def test_a_body_can_have_its_own_smaller_frames(demos, tmp_path):
    """train --image-pixels-of aloha=N: the model is shaped for --image-pixels, this body's
    frames are cached and seen at about N pixels (stored in the checkpoint's embodiment, so
    the policy resizes live frames the same way); a body without data, or below the model's
    smallest frame, is refused by name."""
    from qwen_vla_ros.errors import ConfigError
    from qwen_vla_ros.learning.dataset import training_settings
    from qwen_vla_ros.model.policy import QwenVLAPolicy

    out, _ = demos
    cfg = TrainConfig(steps=2, batch=2, val_every=100, checkpoint_every=100, seed=0)
    quiet = {"settings": settings(), "progress": False, "log": lambda _: None}
    result = train([out], tmp_path / "small", cfg, cameras=["cam_high"],
                   image_pixels=256 * 320, image_pixels_of={"aloha": 128 * 192},
                   cache=tmp_path / "cache", **quiet)
    assert result["image_pixels"] == 256 * 320
    assert result["image_pixels_of"] == {"aloha": 128 * 192}
    policy = QwenVLAPolicy.from_pretrained(tmp_path / "small")
    spec = policy.spec("aloha")
    assert spec.image_pixels == 128 * 192 and policy.config.image_pixels == 256 * 320
    part = training_settings(spec, settings(), policy.backbone.pixels.resize_rule)
    episodes, _ = load_episodes([out], spec, part, cache=tmp_path / "cache")
    assert episodes[0].frames["cam_high"].shape[1:] == (128, 160, 3)
    raw, _ = load_episodes([out], spec, settings(resize=None))  # frames as recorded
    obs, _ = Samples(episodes, "aloha", ("cam_high",)).get(0)
    live, _ = Samples(raw, "aloha", ("cam_high",)).get(0)
    assert live.images["cam_high"].size > obs.images["cam_high"].size  # as recorded
    np.testing.assert_array_equal(policy.predict(obs, seed=0).actions,
                                  policy.predict(live, seed=0).actions)
    with pytest.raises(ConfigError, match=r"image pixels for \['vln'\], which have no --data"):
        train([out], tmp_path / "x", cfg, image_pixels_of={"vln": 128 * 160}, **quiet)
    with pytest.raises(ConfigError, match="below the model's smallest frame"):
        train([out], tmp_path / "y", cfg, image_pixels_of={"aloha": 1024}, **quiet)


def test_the_best_validation_checkpoint_is_kept_apart(demos, tmp_path):
    """train --best-out: the checkpoint with the lowest validation loss so far is written
    there; its weights give that loss again, and the logs say which step it was."""
    from qwen_vla_ros.learning.dataset import training_settings
    from qwen_vla_ros.learning.train import evaluate_loss, split_episodes
    from qwen_vla_ros.model.policy import QwenVLAPolicy

    out, _ = demos
    cfg = TrainConfig(steps=6, batch=2, lr=3e-2, warmup=1, val_every=1, checkpoint_every=100,
                      seed=0, val_samples=8)
    result = train([out], tmp_path / "last", cfg, settings=settings(), progress=False,
                   log=lambda _: None, best_out=tmp_path / "best")
    log = json.loads((tmp_path / "best" / "train_log.json").read_text())
    vals = {h["step"]: h["val_loss"] for h in log["history"] if "val_loss" in h and h["step"]}
    step = min(vals, key=vals.get)
    assert log["best"]["step"] == step == result["best"]["step"], (vals, log["best"])
    assert json.loads((tmp_path / "last" / "train_log.json").read_text())["best"]["step"] == step
    best = QwenVLAPolicy.from_pretrained(tmp_path / "best")
    spec = best.spec("aloha")
    part = training_settings(spec, settings(), best.backbone.pixels.resize_rule)
    episodes, _ = load_episodes([out], spec, part)
    _, val = split_episodes(episodes, cfg.val_fraction, cfg.seed)
    samples = Samples(val, "aloha", spec.cameras)
    assert len(samples) > cfg.val_samples  # so the logged loss is over val_samples of them
    assert evaluate_loss(best, samples, cfg.val_samples, cfg.seed) == \
        pytest.approx(vals[step], rel=1e-5)


def test_eval_refuses_seeds_the_checkpoint_was_trained_on(trained, tmp_path):
    from qwen_vla_ros.errors import ConfigError
    from qwen_vla_ros.evaluate import evaluate

    ckpt, result = trained
    seed = result["train_seeds"][0]
    with pytest.raises(ConfigError, match=rf"seeds \[{seed}\] were trained on"):
        evaluate(ckpt, tmp_path / "x", episodes=1, seed_start=seed, progress=False)


@pytest.mark.parametrize("task,steps", [("vln_goto", 100), ("transfer_cube", 0)])
def test_eval_refuses_episode_steps_it_cannot_apply(tiny_checkpoint, tmp_path, task, steps):
    from qwen_vla_ros.errors import ConfigError
    from qwen_vla_ros.evaluate import evaluate

    with pytest.raises(ConfigError, match="--episode-steps is a positive number"):
        evaluate(tiny_checkpoint, tmp_path / "x", task=task, episodes=1, episode_steps=steps,
                 progress=False)
    assert not (tmp_path / "x").exists()


def test_a_paced_episode_repeats_exactly_whatever_ran_before_it(tiny_checkpoint, tmp_path):
    """Paced, an episode's run depends on its seed alone: seed 9001 evaluated after 9000 and
    evaluated alone sends the same commands (the smoothness figures are computed from every
    command the adapter sent, so any step taken differently changes them). Each episode
    begins from a reset held until POLICY is engaged, the policy's schedule and chunk seeds
    restart with it, and a chunk runs from the tick after the one it was sent at."""
    from qwen_vla_ros.evaluate import evaluate

    quiet = {"paced": True, "blend": "rtc", "rate_factor": 4.0, "episode_steps": 200,
             "progress": False, "log": lambda _: None}
    both = evaluate(tiny_checkpoint, tmp_path / "both", episodes=2, seed_start=9000, **quiet)
    alone = evaluate(tiny_checkpoint, tmp_path / "alone", episodes=1, seed_start=9001,
                     **quiet)
    # wall-clock figures; and the reward trace is timed by the harness's clock subscription
    timed = ("inference_ms_p50", "inference_ms_p99", "time_to_success_s")
    after, first = ({k: v for k, v in r.items() if k not in timed}
                    for r in (both["per_episode"][1], alone["per_episode"][0]))
    assert both["episode_steps"] == 200
    assert after["seed"] == 9001 and after["chunks"] > 10 and after["boundaries"] > 5
    assert after == first
    assert both["pace_timeouts"] == alone["pace_timeouts"] == 0


def test_eval_of_a_known_bad_checkpoint_reports_zero_successes(tiny_checkpoint, tmp_path):
    """A checkpoint that always asks for the start pose (the random-init tiny one with its
    action statistics pinned there) cannot succeed, whatever the timing. (The random-init
    one itself flails at the velocity limit and, once in a while, flings the cube into the
    left gripper: gym-aloha's reward 4 without a transfer.)"""
    import shutil

    from qwen_vla_ros.evaluate import evaluate
    from qwen_vla_ros.sim.aloha import START_ARM

    bad = tmp_path / "frozen"
    shutil.copytree(tiny_checkpoint, bad)
    stats = json.loads((bad / "norm_stats.json").read_text())
    stats["aloha"]["action"]["mean"] = [*START_ARM, 0.0, *START_ARM, 0.0]
    stats["aloha"]["action"]["std"] = [1e-3] * 14
    (bad / "norm_stats.json").write_text(json.dumps(stats))
    result = evaluate(bad, tmp_path / "eval", episodes=1, seed_start=9000,
                      progress=False, log=lambda _: None)
    assert result["episodes"] == 1 and result["successes"] == 0
    row = result["per_episode"][0]
    assert row["seed"] == 9000 and not row["success"] and row["chunks"] > 10
    assert row["max_step_over_limit"] <= 1.001  # the adapter's limits held at every boundary
    assert (tmp_path / "eval" / "eval.png").exists()
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["seeds"] == [9000]


def test_a_pack_carries_the_episodes_and_trains_without_the_bags(demos, tmp_path):
    """`pack`: the training episodes as one small folder (frames as JPEG) come back equal
    (frames within JPEG's loss), train from it alone, and a pack made with other settings
    is refused by name rather than trained on."""
    from dataclasses import replace

    from qwen_vla_ros.learning.dataset import training_settings
    from qwen_vla_ros.learning.pack import write_pack
    from qwen_vla_ros.model.presets import image_resize_rule

    out, _ = demos
    s = training_settings(SPEC, settings(), image_resize_rule("tiny"))
    eps, skipped = load_episodes([out], SPEC, s, cache=tmp_path / "cache")
    write_pack(eps, skipped, s, tmp_path / "pack", quality=90)
    packed_mb = sum(f.stat().st_size for f in (tmp_path / "pack").iterdir()) / 1e6
    cached_mb = sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*.np*")) / 1e6
    assert packed_mb < cached_mb / 5, (packed_mb, cached_mb)
    back, _ = load_episodes([tmp_path / "pack"], SPEC, s)
    assert [e.meta["seed"] for e in back] == [e.meta["seed"] for e in eps]
    for a, b in zip(eps, back, strict=True):
        for name in ("frame_idx", "states", "actions", "ticks"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        for cam, frames in a.frames.items():
            assert b.frames[cam].shape == frames.shape
            assert np.abs(b.frames[cam].astype(float) - frames).mean() < 3.0  # of 255
    cfg = TrainConfig(steps=4, batch=2, warmup=1, val_every=2, checkpoint_every=1000, seed=0)
    train([tmp_path / "pack"], tmp_path / "ckpt", cfg, settings=settings(), progress=False,
          log=lambda _: None)
    log = json.loads((tmp_path / "ckpt" / "train_log.json").read_text())
    assert set(log["train_seeds"]) <= set(SEEDS) and (tmp_path / "ckpt" / "qwen_vla.json").exists()
    with pytest.raises(DatasetError, match="other dataset settings"):
        load_episodes([tmp_path / "pack"], SPEC, replace(s, target="states"))


def test_an_exported_checkpoint_loads_and_names_no_path_of_this_machine(trained, tmp_path):
    """export: what inference needs and a thinned train_log.json; no optimiser state, no
    absolute path; the same weights and the same training seeds (eval still refuses them)."""
    import torch

    from qwen_vla_ros.errors import ConfigError
    from qwen_vla_ros.evaluate import trained_seeds
    from qwen_vla_ros.learning.export import export_checkpoint
    from qwen_vla_ros.model.checkpoint import load_policy

    ckpt, result = trained
    out = export_checkpoint(ckpt, tmp_path / "shipped", every=50)
    assert (ckpt / "train_state.pt").exists() and not (out / "train_state.pt").exists()
    text = (out / "train_log.json").read_text()
    assert str(tmp_path.parents[-2]) not in text and str(ckpt.parent) not in text
    log = json.loads(text)
    assert all(not str(p).startswith("/") for p in log["train_episodes"] + log["val_episodes"])
    assert trained_seeds(out) == result["train_seeds"] == trained_seeds(ckpt)
    full = json.loads((ckpt / "train_log.json").read_text())["history"]
    assert [h for h in log["history"] if "val_loss" in h] == [h for h in full if "val_loss" in h]
    # every 50th step, the validation steps (60, 120) and the last
    assert {h["step"] for h in log["history"] if "loss" in h} == {50, 60, 100, 120}
    with pytest.raises(ConfigError, match="history-every"):
        export_checkpoint(ckpt, tmp_path / "x", every=0)
    with pytest.raises(ConfigError, match="not a trained checkpoint"):
        export_checkpoint(tmp_path / "shipped" / "backbone", tmp_path / "y")
    a, b = load_policy(ckpt), load_policy(out)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_the_shipped_checkpoint_is_trained_and_is_what_the_demo_runs(tmp_path):
    """checkpoints/aloha_transfer_cube_tiny: found as the package's data, loads, was trained
    for ALOHA on recorded seeds (so eval refuses them), and is the demo's default."""
    from qwen_vla_ros.demos.common import ensure_checkpoint
    from qwen_vla_ros.evaluate import trained_seeds
    from qwen_vla_ros.model.checkpoint import load_policy, read_meta
    from qwen_vla_ros.paths import shipped_checkpoint

    ckpt = shipped_checkpoint()
    assert ckpt is not None and ckpt.name == "aloha_transfer_cube_tiny"
    assert read_meta(ckpt)["trained_embodiments"] == ["aloha"]
    assert trained_seeds(ckpt) and not (ckpt / "train_state.pt").exists()
    policy = load_policy(ckpt)
    assert list(policy.embodiments) == ["aloha"]
    assert ensure_checkpoint(tmp_path, None, seed=0) == ckpt
    assert not (tmp_path / "checkpoint").exists()  # no random-init one made


def test_an_exported_log_keeps_no_absolute_path_anywhere():
    """Beside the bag lists: the best-validation checkpoint's folder (``best.out``) and any
    other absolute path become their last component; topic names stay whole."""
    from qwen_vla_ros.learning.export import portable_log

    log = {"train_episodes": ["/data/run/episode_01000"],
           "best": {"step": 5, "out": "/runs/x/best"},
           "dataset": {"camera_topics": [["cam_high", "/cam_high/image_raw"]]},
           "note": {"deep": ["/somewhere/else"]}, "preset": "tiny", "history": []}
    out = portable_log(log)
    assert out["best"] == {"step": 5, "out": "best"} and out["note"]["deep"] == ["else"]
    assert out["dataset"]["camera_topics"] == [["cam_high", "/cam_high/image_raw"]]
    assert out["train_episodes"] == ["episode_01000"] and out["preset"] == "tiny"


def test_the_shipped_joint_checkpoint_is_one_set_of_weights_for_both_bodies():
    """checkpoints/aloha_vln_joint_tiny: found as the package's data, trained for ALOHA and
    the VLN body (on recorded seeds of each, which eval refuses), exported without optimiser
    state, and loads with both embodiments."""
    from qwen_vla_ros.evaluate import trained_seeds
    from qwen_vla_ros.model.checkpoint import load_policy, read_meta
    from qwen_vla_ros.paths import SHIPPED_JOINT_CHECKPOINT, shipped_checkpoint

    ckpt = shipped_checkpoint(SHIPPED_JOINT_CHECKPOINT)
    assert ckpt is not None and ckpt.name == "aloha_vln_joint_tiny"
    assert sorted(read_meta(ckpt)["trained_embodiments"]) == ["aloha", "vln"]
    assert trained_seeds(ckpt, "aloha") and trained_seeds(ckpt, "vln")
    assert not (ckpt / "train_state.pt").exists()
    assert sorted(load_policy(ckpt).embodiments) == ["aloha", "vln"]


def test_the_shipped_vln_checkpoint_is_trained_and_is_what_demo_vln_runs(tmp_path):
    """checkpoints/vln_goto_tiny: found as the package's data, loads, was trained for the VLN
    body on recorded seeds (eval refuses them), and is demo vln's default."""
    from qwen_vla_ros.demos.common import ensure_checkpoint
    from qwen_vla_ros.evaluate import trained_seeds
    from qwen_vla_ros.model.checkpoint import load_policy, read_meta
    from qwen_vla_ros.paths import SHIPPED_CHECKPOINTS, shipped_checkpoint

    ckpt = shipped_checkpoint(SHIPPED_CHECKPOINTS["vln"])
    assert ckpt is not None and ckpt.name == "vln_goto_tiny"
    assert read_meta(ckpt)["trained_embodiments"] == ["vln"]
    assert trained_seeds(ckpt, "vln") and not (ckpt / "train_state.pt").exists()
    assert list(load_policy(ckpt).embodiments) == ["vln"]
    assert ensure_checkpoint(tmp_path, None, seed=0, embodiment="vln") == ckpt
    assert not (tmp_path / "checkpoint").exists()  # no random-init one made
