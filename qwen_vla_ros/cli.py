"""``qwen-vla-ros``: the command-line tool.

    qwen-vla-ros checkpoint tiny OUT_DIR        write a complete random-init tiny checkpoint
    qwen-vla-ros bench model --preset tiny|full [--device cuda --dtype bfloat16] --json OUT
    qwen-vla-ros demo [--seconds N] [--out DIR] [--checkpoint DIR]   simulated ALOHA, recorded
    qwen-vla-ros demo vln [--seconds N] [--instruction TEXT]         simulated VLN base
    qwen-vla-ros replay BAG --checkpoint DIR --out DIR   offline: what would the policy do?
    qwen-vla-ros play BAG [--rate X]            publish a bag's messages and /clock (live replay)
    qwen-vla-ros bringup NAME [arg:=value ...]  the launch file's nodes, in one process
    qwen-vla-ros collect --episodes N --out DIR  scripted teleop episodes, one bag each
    qwen-vla-ros train --data DIR --out CKPT     fine-tune on demonstration bags
    qwen-vla-ros pack --data DIR --out PACK      those bags as one small folder (train --data PACK)
    qwen-vla-ros eval --checkpoint CKPT --out DIR  closed-loop success in the sim
    qwen-vla-ros export CKPT OUT                a trained checkpoint fit to ship (checkpoints/)
    qwen-vla-ros embodiments                    list the embodiments in config/
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from qwen_vla_ros.errors import ConfigError


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from qwen_vla_ros.model.presets import build_preset

    policy = build_preset(args.preset, args.embodiment or None, seed=args.seed)
    out = policy.save_pretrained(args.out_dir)
    print(f"wrote {args.preset} checkpoint to {out} "
          f"(embodiments: {', '.join(sorted(policy.embodiments))})")
    return 0


def cmd_bench_model(args: argparse.Namespace) -> int:
    from qwen_vla_ros.model.bench import format_result, run_model_bench
    from qwen_vla_ros.results import save_results

    result = run_model_bench(args.preset, device=args.device, dtype=args.dtype,
                             iters=args.iters, warmup=args.warmup, steps=args.steps,
                             variants=tuple(args.variants), compile_mode=args.compile_mode,
                             log=lambda line: print(line, flush=True),
                             max_seconds=args.max_seconds)
    print(format_result(result))
    save_results(args.json, result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    vln = args.which == "vln"
    out = Path("out/demo_vln" if vln and args.out == "out/demo" else args.out)

    def run() -> None:
        if vln:
            from qwen_vla_ros.demos.vln import format_vln_summary, run_vln_demo

            summary = run_vln_demo(out=out, seconds=args.seconds, checkpoint=args.checkpoint,
                                   seed=args.seed, instruction=args.instruction or
                                   "go to the red box", rate_factor=args.rate_factor)
            print(format_vln_summary(summary))
        else:
            from qwen_vla_ros.demos.aloha import format_summary, run_sim_demo

            summary = run_sim_demo(out=out, seconds=args.seconds,
                                   teleop_seconds=args.teleop_seconds,
                                   checkpoint=args.checkpoint, seed=args.seed,
                                   rate_factor=args.rate_factor, blend=args.blend)
            print(format_summary(summary))
        print(f"wrote {out / 'summary.json'}")

    return _one_line_errors("demo", run, out=out)


def cmd_replay(args: argparse.Namespace) -> int:
    from qwen_vla_ros.replay.offline import ReplayOptions, replay

    incomplete = []

    def run() -> None:
        from qwen_vla_ros.options import from_args

        opts = from_args(ReplayOptions, args)
        result = replay(opts, log=lambda m: print(m, file=sys.stderr))
        rep = result.report
        lv = rep.get("live_vs_replay") or {}
        print(f"replayed {rep['ticks']} ticks ({rep['tick_source']}), {rep['chunks']} chunks, "
              f"{rep['speed_x_realtime']} x real time")
        if lv:
            print(f"live vs replay: {lv['compared']} chunks, max |diff| "
                  f"{lv['max_abs_diff']:.3g}")
        for err in result.errors:
            print(f"warning: {err}", file=sys.stderr)
        print(f"wrote {result.out_bag} and {Path(args.out) / 'report.html'}")
        incomplete.extend(result.incomplete)

    code = _one_line_errors("replay", run, out=Path(args.out))
    if code == 0 and incomplete:  # the report stays: it says what was replayed
        print("qwen-vla-ros replay: the bag was not fully replayed: " + "; ".join(incomplete),
              file=sys.stderr)
        return 2
    return code


def cmd_play(args: argparse.Namespace) -> int:
    from qwen_vla_ros.replay.play import play

    def run() -> None:
        topics = list(args.topic or [])
        if args.inputs_of:
            from qwen_vla_ros.bringup import load_bringup
            from qwen_vla_ros.replay.bagio import open_bag

            present = open_bag(args.bag).topics
            topics += [t for t in load_bringup(args.inputs_of).bag_topics if t in present]
        stats = play(args.bag, rate=args.rate, topics=topics or None,
                     clock=args.clock, start=args.start, loop=args.loop)
        print(f"published {stats['messages']} messages in {stats['wall_s']:.1f} s "
              f"({stats['skipped_topics']} topics skipped)")

    return _one_line_errors("play", run)


def cmd_params(args: argparse.Namespace) -> int:
    from qwen_vla_ros.bringup import EXECUTABLES, node_params
    from qwen_vla_ros.params import described

    for name in args.nodes or sorted(EXECUTABLES):
        cls = node_params(name)
        print(f"{name} ({cls.__module__}.{cls.__name__})\n\n| parameter | default | meaning |"
              "\n|---|---|---|")
        for field, default, text in described(cls):
            print(f"| `{field}` | {default!r} | {text} |")
        print()
    return 0


def cmd_bringup(args: argparse.Namespace) -> int:
    from qwen_vla_ros.bringup import run

    values = {}
    for item in args.args:
        if ":=" not in item:
            raise SystemExit(f"argument '{item}' is not NAME:=VALUE")
        k, v = item.split(":=", 1)
        values[k] = v
    run(args.name, values)
    return 0


def _one_line_errors(command: str, run: Callable[[], object], out: Path | None = None) -> int:
    """Run a command; a bad argument, file or checkpoint is one line on stderr, exit 2, and an
    output directory this run created is removed again (nothing half-written is left)."""
    import shutil

    from qwen_vla_ros.errors import QwenVLAError

    fresh = out is not None and not out.exists()
    try:
        run()
    except (QwenVLAError, ValueError, TimeoutError, OSError) as exc:
        print(f"qwen-vla-ros {command}: {exc}", file=sys.stderr)
        if fresh and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        return 2
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from qwen_vla_ros.collect import collect

    return _one_line_errors("collect", lambda: collect(
        args.out, task=args.task, episodes=args.episodes, seed_start=args.seed_start,
        instruction=args.instruction, rate_factor=args.rate_factor,
        progress=not args.no_progress, disturbance=args.disturbance,
        lockstep_timeout_s=args.lockstep_timeout, search=args.search, detours=args.detours,
        colours=args.colours, beside=args.beside))


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise ConfigError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _float(text: str, option: str, expected: str = "a number") -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{option}: expected {expected}, got {text!r}") from None


def _int(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{option}: expected an integer, got {text!r}") from None


def _pixels_of(items: list[str]) -> dict[str, int]:
    """``--image-pixels-of`` items EMBODIMENT=N."""
    return {k: _int(v, "--image-pixels-of") for k, v in map(_pair, items)}


def _by_embodiment(items: list[str], default: str) -> dict[str, list[Path]]:
    """``--data`` items: DIR (the --embodiment's) or EMBODIMENT=DIR (joint training)."""
    out: dict[str, list[Path]] = {}
    for item in items:
        name, path = _pair(item) if "=" in item else (default, item)
        out.setdefault(name, []).append(Path(path))
    return out


def _model_view_args(p: argparse.ArgumentParser) -> None:
    """What a new model sees (train; pack must assemble the same)."""
    p.add_argument("--cameras", nargs="+", metavar="CAMERA",
                   help="the --embodiment's cameras the policy sees (default all of them); "
                        "stored in the checkpoint, so the policy node feeds it those")
    p.add_argument("--image-pixels", type=int, metavar="N",
                   help="about how many pixels each camera frame is resized to (a new "
                        "model; default the preset's); with --init, more than the "
                        "checkpoint's, for a new body: the bodies it knows keep theirs")
    p.add_argument("--image-pixels-of", nargs="*", default=[], metavar="EMBODIMENT=N",
                   help="a body's own pixels per frame, below --image-pixels (stored in the "
                        "checkpoint): a body whose frames need less detail costs less")


def cmd_train(args: argparse.Namespace) -> int:
    from qwen_vla_ros.learning.dataset import DatasetSettings
    from qwen_vla_ros.learning.train import TrainConfig, train

    def run() -> None:
        lead = _pair(args.lead) if args.lead else None
        cfg = TrainConfig(steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr,
                          warmup=args.warmup, seed=args.seed, val_every=args.val_every,
                          val_samples=args.val_samples,
                          checkpoint_every=args.checkpoint_every,
                          keep_every=args.keep_every,
                          freeze_backbone=args.freeze_backbone, device=args.device,
                          prefix_fraction=args.prefix_fraction,
                          state_noise=args.state_noise, start_share=args.start_share,
                          start_seconds=args.start_seconds, shift_pixels=args.shift_pixels,
                          noise_samples=args.noise_samples, lead=lead[0] if lead else None,
                          lead_share=_float(lead[1], "--lead", "a share in (0, 1)")
                          if lead else 0.0)
        settings = DatasetSettings(embodiment=args.embodiment, target=args.target,
                                   include_failed=args.include_failed)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        data = _by_embodiment(args.data, args.embodiment)
        first = next(iter(data.values()))[0]
        train(data, args.out, cfg, preset=args.preset, init=args.init,
              embodiment=args.embodiment, resume=args.resume, settings=settings,
              cache=args.cache or first / "cache", progress=not args.no_progress,
              weights={k: _float(v, "--weights") for k, v in map(_pair, args.weights)},
              cameras=args.cameras, image_pixels=args.image_pixels,
              image_pixels_of=_pixels_of(args.image_pixels_of), best_out=args.best_out,
              instruction_first=args.instruction_first, prompt_summary=args.prompt_summary,
              keep_out=args.keep_out)

    return _one_line_errors("train", run)


def cmd_pack(args: argparse.Namespace) -> int:
    from qwen_vla_ros.embodiment.spec import load_embodiment
    from qwen_vla_ros.learning.dataset import DatasetSettings, load_episodes, training_settings
    from qwen_vla_ros.learning.pack import write_pack
    from qwen_vla_ros.model.presets import image_resize_rule

    def run() -> None:
        spec = load_embodiment(args.embodiment)
        if args.cameras:
            spec = spec.with_cameras(args.cameras)
        pixels = _pixels_of(args.image_pixels_of)
        unknown = sorted(set(pixels) - {spec.name})
        if unknown:
            raise ConfigError(f"--image-pixels-of {unknown}: this pack is of {spec.name}")
        spec = spec.with_image_pixels(pixels.get(spec.name))
        settings = training_settings(spec, DatasetSettings(
            embodiment=spec.name, target=args.target, include_failed=args.include_failed),
            image_resize_rule(args.preset, args.image_pixels))
        episodes, skipped = load_episodes(args.data, spec, settings,
                                          cache=args.cache or args.data[0] / "cache")
        write_pack(episodes, skipped, settings, args.out, quality=args.quality)
        mb = sum(f.stat().st_size for f in args.out.iterdir()) / 1e6
        print(f"packed {len(episodes)} episodes ({sum(map(len, episodes))} samples; "
              f"{len(skipped)} bag(s) skipped), JPEG quality {args.quality}: {mb:.1f} MB -> "
              f"{args.out}")

    return _one_line_errors("pack", run)


def cmd_export(args: argparse.Namespace) -> int:
    from qwen_vla_ros.learning.export import export_checkpoint

    def run() -> None:
        dst = export_checkpoint(args.checkpoint, args.out, every=args.history_every)
        size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
        print(f"export: {args.checkpoint} -> {dst} ({size / 1e6:.1f} MB)")

    return _one_line_errors("export", run)


def cmd_eval(args: argparse.Namespace) -> int:
    from qwen_vla_ros.evaluate import evaluate

    return _one_line_errors("eval", out=args.out, run=lambda: evaluate(
        args.checkpoint, args.out, task=args.task, episodes=args.episodes,
        seed_start=args.seed_start, instruction=args.instruction,
        rate_factor=args.rate_factor, allow_train_seeds=args.allow_train_seeds,
        blend=args.blend, colours=args.colours, paced=args.paced,
        episode_steps=args.episode_steps, progress=not args.no_progress,
        policy_params=policy_params(args.param)))


def policy_params(items: list[str]) -> dict[str, object]:
    """``eval --param NAME:=VALUE`` items -> {name: value}, each value read as YAML (0.7 a
    float, 3 an int, true a bool, else the text); a malformed item is a ValueError."""
    import yaml

    out: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"--param '{item}' is not NAME:=VALUE")
        out[name] = yaml.safe_load(value)
    return out


def cmd_embodiments(args: argparse.Namespace) -> int:
    from qwen_vla_ros.embodiment.spec import available_embodiments, load_embodiment

    for name in available_embodiments():
        spec = load_embodiment(name)
        print(f"{name}: {spec.kind}, {spec.action_dim} action dims, {spec.horizon} steps at "
              f"{spec.control_rate_hz:g} Hz, cameras {list(spec.cameras)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from qwen_vla_ros.runtime.executor import BLEND_MODES

    parser = argparse.ArgumentParser(prog="qwen-vla-ros", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("checkpoint", help="write a random-init checkpoint of a preset")
    p.add_argument("preset", choices=["tiny", "full"])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--embodiment", action="append", help="limit to these (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="what", required=True)
    m = bench.add_parser("model", help="chunk latency p50/p99 and peak memory")
    m.add_argument("--preset", choices=["tiny", "full"], default="tiny")
    m.add_argument("--device", default="cpu")
    m.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    m.add_argument("--iters", type=int, default=20)
    m.add_argument("--warmup", type=int, default=3)
    m.add_argument("--steps", type=int, default=10, help="flow steps")
    m.add_argument("--variants", nargs="+", default=["eager"],
                   help="timed in one run, interleaved: " + ", ".join(
                       repr(v) for v in ("eager", "eager, 4 steps", "no layout cache",
                                         "compiled decoder", "compiled",
                                         "compiled, 4 steps")))
    m.add_argument("--compile-mode", default=None,
                   help="torch.compile mode of the compiled variants (e.g. reduce-overhead)")
    m.add_argument("--max-seconds", type=float, default=None,
                   help="budget (s) of building and warming up (compiling): a warm-up still "
                        "running at its end is interrupted and it and later variants skipped")
    m.add_argument("--json", help="write the figures here")
    m.set_defaults(func=cmd_bench_model)

    p = sub.add_parser("demo", help="the main job: simulated ALOHA closed loop (see README); "
                                    "`demo vln`: the simulated mobile base")
    p.add_argument("which", nargs="?", choices=["aloha", "vln"], default="aloha")
    p.add_argument("--instruction", help="vln: the navigation instruction")
    p.add_argument("--seconds", type=float, default=20.0, help="sim seconds in all")
    p.add_argument("--teleop-seconds", type=float, default=9.5,
                   help="sim seconds in TELEOP (scripted leader) before POLICY (default: the "
                        "first episode, 9 s, then POLICY in the second)")
    p.add_argument("--blend", choices=BLEND_MODES, default="rtc",
                   help="aloha_adapter's chunk execution (as eval --blend)")
    p.add_argument("--rate-factor", type=float, default=1.0, help="sim speed vs wall clock")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="policy checkpoint (default: make a tiny one in OUT)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("collect", help="record scripted teleop episodes in the simulated "
                                       "ALOHA, one rosbag2 per episode (docs/learning.md)")
    p.add_argument("--task", default="transfer_cube")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed-start", type=int, default=0, help="seed of the first episode")
    p.add_argument("--out", type=Path, required=True, help="directory for the episode bags")
    p.add_argument("--instruction", default="transfer the red cube to the other arm",
                   help="transfer_cube's (vln_goto episodes name their own goal)")
    p.add_argument("--rate-factor", type=float, default=1.0, help="sim speed vs wall clock")
    p.add_argument("--disturbance", type=float, default=0.0, metavar="RAD",
                   help="arm tasks: std of a slow offset the sim adds to the arm joints' "
                        "targets, so the demonstrations show recoveries (the recorded "
                        "commands stay the leader's); 0: off")
    p.add_argument("--lockstep-timeout", type=float, default=1.0, metavar="S",
                   help="arm tasks: the sim steps with the teleop commands, waiting up to "
                        "this long for them, so a busy machine slows the collection instead "
                        "of failing demonstrations; 0: the sim runs on its wall timer")
    p.add_argument("--search", action="store_true",
                   help="vln_goto: the demonstrator first turns left in place until the named "
                        "object is in the camera's view, then plans (what it does can be "
                        "told from the images; without: it heads off on the map's plan)")
    p.add_argument("--detours", type=float, default=0.0, metavar="SHARE",
                   help="vln_goto: the share of episodes (chosen by seed) where the "
                        "demonstrator is pushed off its path once, then recovers (recovery "
                        "data; training skips the samples whose targets cover the push)")
    p.add_argument("--colours", default="", metavar="C1,C2,...",
                   help="vln_goto: each of the --episodes start poses once per colour (e.g. "
                        "red,green,blue,yellow), so only the named object differs, as eval's "
                        "language check runs them")
    p.add_argument("--beside", action="store_true",
                   help="vln_goto with --colours: each start beside one of the colours' "
                        "objects (as most evaluation starts are), once per other colour")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("train", help="fine-tune a policy on demonstration bags "
                                     "(docs/learning.md)")
    p.add_argument("--data", nargs="+", required=True,
                   help="bag directories, or folders of them (e.g. a collect --out); "
                        "EMBODIMENT=DIR for one checkpoint of several (aloha=DIR vln=DIR)")
    p.add_argument("--weights", nargs="*", default=[], metavar="EMBODIMENT=W",
                   help="joint training: how often each embodiment's batch is drawn "
                        "(default equal)")
    p.add_argument("--lead", metavar="EMBODIMENT=SHARE",
                   help="joint training: the first SHARE (0..1) of the budget (--steps or "
                        "--minutes) trains EMBODIMENT alone, then --weights (e.g. vln=0.2)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory")
    p.add_argument("--preset", default="tiny", help="model shape when not --init")
    p.add_argument("--init", type=Path, help="start from this checkpoint (any backbone size)")
    p.add_argument("--embodiment", default="aloha")
    p.add_argument("--steps", type=int)
    p.add_argument("--minutes", type=float, help="stop after this much training time, the "
                   "run's whole budget as --steps is (with --resume: the minutes already "
                   "trained count, and the cosine schedule goes on; to extend, give more)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--val-samples", type=int, default=64,
                   help="validation samples per check (fixed samples and noise); more: a "
                        "steadier curve and best checkpoint, at their forward passes' cost")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--best-out", type=Path, metavar="DIR",
                   help="also keep the checkpoint with the lowest validation loss so far here "
                        "(weights and log; not resumable)")
    p.add_argument("--keep-every", type=int, default=0, metavar="N",
                   help="also keep the weights every N steps, each in KEEP_OUT/step_NNNNNN "
                        "(to choose a step in closed loop; not resumable); 0: off")
    p.add_argument("--keep-out", type=Path, metavar="DIR",
                   help="where --keep-every's checkpoints go (default: OUT_steps)")
    p.add_argument("--freeze-backbone", action="store_true")
    p.add_argument("--prefix-fraction", type=float, default=0.5,
                   help="share of samples trained to continue a committed prefix (real-time "
                        "chunking at run time)")
    p.add_argument("--state-noise", type=float, default=0.0, metavar="STD",
                   help="Gaussian noise on each sample's observed joint state, in standard "
                        "deviations of each dimension (targets unchanged); 0: off")
    p.add_argument("--start-share", type=float, default=0.0, metavar="P",
                   help="share of each batch drawn from the episodes' first --start-seconds "
                        "(where only the images say where the object is); 0: uniform")
    p.add_argument("--start-seconds", type=float, default=1.5)
    p.add_argument("--shift-pixels", type=int, default=0, metavar="PX",
                   help="shift each training sample's frames by a random offset of up to PX "
                        "pixels in x and y (augmentation); 0: off")
    p.add_argument("--noise-samples", type=int, default=1, metavar="K",
                   help="flow-matching times and noises drawn per sample against its one "
                        "backbone pass (the decoder runs on batch x K rows); 1: one")
    p.add_argument("--target", choices=["commands", "states"], default="commands",
                   help="what the chunk learns: the commands sent, or the followers' states")
    p.add_argument("--include-failed", action="store_true",
                   help="also train on episodes /collect/episode marks as failed")
    p.add_argument("--cache", type=Path, help="decoded-frame cache (default DATA[0]/cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--instruction-first", action="store_true",
                   help="a new model reads the instruction before the camera images (the "
                        "image tokens can then depend on it); --init/--resume keep the "
                        "checkpoint's layout")
    p.add_argument("--prompt-summary", action="store_true",
                   help="a new model's action decoder also reads the backbone's last prompt "
                        "token (it has read the instruction) in every block's adaLN "
                        "condition; --init/--resume keep the checkpoint's")
    _model_view_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pack", help="the training episodes of some bags in one small folder "
                                    "(frames as JPEG): train --data PACK where bags can't go")
    p.add_argument("--data", nargs="+", type=Path, required=True, help="bag directories")
    p.add_argument("--out", type=Path, required=True, help="the pack folder")
    p.add_argument("--preset", default="tiny", help="frames resized as this preset's model")
    p.add_argument("--embodiment", default="aloha")
    p.add_argument("--target", choices=["commands", "states"], default="commands")
    p.add_argument("--include-failed", action="store_true")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (1-100)")
    p.add_argument("--cache", type=Path, help="decoded-frame cache (default DATA[0]/cache)")
    _model_view_args(p)
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("export", help="a trained checkpoint fit to ship: no optimiser state, "
                                      "no paths of this machine in train_log.json")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--history-every", type=int, default=50,
                   help="keep every N-th training step's record (validation records all kept)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="closed-loop success of a checkpoint in the simulated "
                                    "ALOHA, through the full ROS path")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--task", default="transfer_cube")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed-start", type=int, default=10_000,
                   help="first evaluation seed (never one the checkpoint was trained on)")
    p.add_argument("--instruction", help="transfer_cube: default 'transfer the red cube to "
                                         "the other arm'; vln_goto: replaces every episode's "
                                         "(one naming no object is reported apart)")
    p.add_argument("--colours", default="",
                   help="vln_goto: each start pose once per colour, e.g. red,green,blue,yellow "
                        "(the language check)")
    p.add_argument("--rate-factor", type=float, default=1.0,
                   help="sim speed vs wall clock (< 1 when inference is slower than real time)")
    p.add_argument("--allow-train-seeds", action="store_true")
    p.add_argument("--blend", choices=BLEND_MODES,
                   help="aloha_adapter's chunk execution (default: its config's); rtc also "
                        "has policy_node sample with the measured-delay prefix")
    p.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="a parameter of the node that runs the policy (policy_node, or "
                        "navigation_node for vln_goto), e.g. stop_threshold:=0.7 "
                        "(repeatable; recorded in eval.json)")
    p.add_argument("--paced", action="store_true",
                   help="the sim waits for each chunk and each command, so the model's "
                        "own time does not count and --param added_latency_ms:=N is the "
                        "exact delay (runtime/pacing.py; vln_goto: navigation_node paces "
                        "base_sim); --rate-factor caps the speed")
    p.add_argument("--episode-steps", type=int,
                   help="arm tasks: steps per episode (default: aloha_sim's, 450 = 9 s), "
                        "e.g. shorter for a quick look")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("replay", help="offline: run a checkpoint on a recorded bag; report")
    from qwen_vla_ros.options import add_arguments
    from qwen_vla_ros.replay.options import ReplayOptions

    add_arguments(p, ReplayOptions)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("play", help="publish a bag's messages and /clock (no rosbag2 needed)")
    p.add_argument("bag", type=Path)
    p.add_argument("--rate", type=float, default=1.0, help="playback speed multiple")
    p.add_argument("--topic", action="append", help="only these topics (repeatable)")
    p.add_argument("--inputs-of", metavar="BRINGUP",
                   help="only the input topics of a bringup (its bag_topics), e.g. replay")
    p.add_argument("--clock", choices=["auto", "recorded", "log", "off"], default="auto",
                   help="auto: the bag's /clock if recorded, else log time (as ros2 bag play "
                        "--clock)")
    p.add_argument("--start", type=float, default=0.0, help="s since the bag's first message")
    p.add_argument("--loop", action="store_true")
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("bringup", help="start a bringup's nodes in one process (no ros2 launch)")
    p.add_argument("name", help="config/bringup/NAME.yaml: aloha, aloha_sim")
    p.add_argument("args", nargs="*", help="launch arguments as NAME:=VALUE")
    p.set_defaults(func=cmd_bringup)

    p = sub.add_parser("params", help="every parameter of a node, its default and meaning "
                                      "(the node's parameters dataclass), as a table")
    p.add_argument("nodes", nargs="*", help="node executables (default: all)")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("embodiments", help="list configured embodiments")
    p.set_defaults(func=cmd_embodiments)
    return parser


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Exit 130 on Ctrl-C or SIGTERM, after each command's own cleanup (``with`` blocks: the
    nodes stopped, a bag being recorded closed; collect removes an unfinished episode's)."""
    _quiet_transformers()
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return int(args.func(args))
    except KeyboardInterrupt as exc:
        why = str(exc) or "SIGINT"
        print(f"qwen-vla-ros {args.command}: interrupted ({why})", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
