"""Training throughput of the tiny preset on this machine, old path against new, in one run:

- preprocessing of one ALOHA observation (4 cameras 240x320): transformers' PIL image
  processor against ``TorchImageProcessor``;
- patch embedding forward + backward (a batch of 8 observations): transformers' Conv3d against
  the matrix product ``patch_embed_as_matmul`` runs;
- one optimizer step's loss + backward, batch 8: one observation at a time from recorded
  240x320 frames (the previous training loop's structure, here already with the two changes
  above) against one batched pass over frames resized once (the current loop).

Medians over ``--repeats``; ratios from the same run.

    python bench/train_step.py --json out/train_step.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from qwen_vla_ros.results import save_results


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    from qwen_vla_ros.cli import _quiet_transformers

    _quiet_transformers()
    import torch

    from qwen_vla_ros.model.preprocess import resize_frames
    from qwen_vla_ros.model.presets import build_preset
    from qwen_vla_ros.model.types import Observation

    torch.manual_seed(0)
    policy = build_preset("tiny", ["aloha"])
    spec = policy.spec("aloha")
    rng = np.random.default_rng(0)
    raw = [{c: rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for c in spec.cameras}
           for _ in range(args.batch)]
    state = (spec.lower() + spec.upper())[:spec.state_dim] / 2
    actions = rng.uniform(spec.lower(), spec.upper(), (args.batch, spec.horizon,
                                                       spec.action_dim))

    def obs(images):
        return Observation(images=images, state=state, instruction="transfer the cube",
                           embodiment="aloha")

    pixels = policy.backbone.pixels
    one = [raw[0][c] for c in spec.cameras]
    results: dict[str, float] = {}
    results["preprocess_pil_ms"] = median_ms(
        lambda: policy.backbone.image_processor(images=one, return_tensors="pt"), args.repeats)
    results["preprocess_torch_ms"] = median_ms(lambda: pixels(one), args.repeats)

    embed = policy.backbone.model.visual.patch_embed
    patches = pixels([img for r in raw for img in r.values()])["pixel_values"]

    def embed_step():
        embed.zero_grad()
        embed(patches).sum().backward()

    results["patch_embed_matmul_ms"] = median_ms(embed_step, args.repeats)
    matmul_class = type(embed)
    embed.__class__ = matmul_class.__mro__[1]  # transformers' own class: its Conv3d forward
    results["patch_embed_conv3d_ms"] = median_ms(embed_step, args.repeats)
    embed.__class__ = matmul_class

    policy.train()
    small = [{c: resize_frames(r[c][None], pixels.resize_rule)[0] for c in spec.cameras}
             for r in raw]

    def per_sample():
        policy.zero_grad()
        loss = sum(policy.loss(obs(r), a) for r, a in zip(raw, actions, strict=True))
        (loss / args.batch).backward()

    def batched():
        policy.zero_grad()
        policy.loss([obs(r) for r in small], actions).backward()

    results["step_per_sample_ms"] = median_ms(per_sample, args.repeats)
    results["step_batched_ms"] = median_ms(batched, args.repeats)
    for key in ("step_per_sample", "step_batched"):
        results[f"{key}_samples_per_s"] = args.batch / results[f"{key}_ms"] * 1e3
    results["preprocess_speedup"] = results["preprocess_pil_ms"] / results["preprocess_torch_ms"]
    results["patch_embed_speedup"] = (results["patch_embed_conv3d_ms"]
                                      / results["patch_embed_matmul_ms"])
    results["step_speedup"] = results["step_per_sample_ms"] / results["step_batched_ms"]
    results.update(batch=args.batch, repeats=args.repeats, threads=torch.get_num_threads())
    for key, value in results.items():
        print(f"{key:32s} {value:10.2f}" if isinstance(value, float) else f"{key:32s} {value}")
    save_results(args.json, results)


if __name__ == "__main__":
    main()
