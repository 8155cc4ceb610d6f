"""Open-loop check of a trained checkpoint: on its held-out validation episodes (listed in its
train_log.json), the mean |predicted chunk - demonstrated chunk| in normalised units, against
predicting the training action mean; plus the training throughput the log recorded.

--first-chunk: the same for each held-out episode's first chunk, where every episode starts
from the same pose and only the images say where the object is, against predicting the mean
first chunk of the training episodes; and how much the prediction moves when the images are
another held-out episode's (0: the policy ignores its cameras there).

--language (vln_goto checkpoints): the validation loss with each held-out sample's own
instruction against the same samples and noise with the instruction reworded to name the next
object of the room (red -> green -> blue -> yellow -> red, same template): equal where the
policy ignores the words; the ratio says how much the named goal steers its prediction.

    python bench/learning.py --checkpoint ckpt/tc --samples 64 --json out/bench_learning.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from qwen_vla_ros.results import save_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--cache", type=Path, help="the dataset cache the run used (faster)")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first-chunk", action="store_true")
    ap.add_argument("--language", action="store_true",
                    help="vln_goto: loss with own vs another object's instruction")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from qwen_vla_ros.cli import _quiet_transformers

    _quiet_transformers()
    from qwen_vla_ros.learning.dataset import DatasetSettings, load_episodes
    from qwen_vla_ros.learning.train import Samples, action_error
    from qwen_vla_ros.model.policy import QwenVLAPolicy

    log = json.loads((args.checkpoint / "train_log.json").read_text())
    policy = QwenVLAPolicy.from_pretrained(args.checkpoint)
    spec = policy.spec(log["embodiment"])
    settings = DatasetSettings.from_dict(log["dataset"])
    val, _ = load_episodes([Path(p) for p in log["val_episodes"]], spec, settings,
                           cache=args.cache, log=lambda _: None)
    err, base = action_error(policy, Samples(val, spec.name, spec.cameras), args.samples,
                             args.seed)
    history = [h for h in log["history"] if "loss" in h]
    seconds = history[-1]["seconds"] if history else 0.0
    result = {"checkpoint": str(args.checkpoint), "val_episodes": len(val),
              "samples": min(args.samples, sum(len(e) for e in val)),
              "action_error": err, "mean_baseline": base, "ratio": err / base,
              "steps": history[-1]["step"] if history else 0,
              "batch": log["config"]["batch"], "train_seconds": seconds,
              "samples_per_s": (history[-1]["step"] * log["config"]["batch"] / seconds)
              if seconds else None}
    print(f"held-out action error {err:.3f} vs predict-the-mean {base:.3f} "
          f"(ratio {err / base:.2f}) on {result['samples']} samples of {len(val)} episodes; "
          f"trained {result['steps']} steps x batch {result['batch']} in {seconds / 60:.1f} min")
    if args.first_chunk:
        train_eps, _ = load_episodes([Path(p) for p in log["train_episodes"]], spec, settings,
                                     cache=args.cache, log=lambda _: None)
        result["first_chunk"] = first = first_chunk_check(policy, spec, train_eps, val,
                                                          args.seed)
        print(f"first chunk of {len(val)} held-out episodes: error {first['error']:.3f} vs "
              f"the training episodes' mean first chunk {first['mean_baseline']:.3f}; "
              f"another episode's images move it by {first['image_swap']:.3f}")
    if args.language:
        result["language"] = language_check(policy, Samples(val, spec.name, spec.cameras),
                                            args.samples, args.seed)
        lang = result["language"]
        print(f"language: loss {lang['own_instruction']:.4f} with the own instruction, "
              f"{lang['other_object']:.4f} naming the next object (ratio {lang['ratio']:.2f}) "
              f"on {lang['samples']} samples")
    save_results(args.json, result)


def language_check(policy, samples, n: int, seed: int) -> dict[str, float]:
    """Loss with the own instruction vs the same wording naming the next object."""
    from qwen_vla_ros.learning.train import instruction_swap_loss, next_goal

    own, other, used = instruction_swap_loss(policy, samples, n, seed, next_goal)
    return {"own_instruction": own, "other_object": other, "ratio": other / own,
            "samples": used}


def first_chunk_check(policy, spec, train_eps, val_eps, seed: int) -> dict[str, float]:
    """Normalised mean errors of the held-out episodes' first chunks (see the docstring)."""
    import numpy as np

    from qwen_vla_ros.learning.train import Samples

    def firsts(eps):
        samples = Samples(eps, spec.name, spec.cameras)
        return [samples.get(samples.index.index((e, 0))) for e in range(len(eps))]

    norm = policy.norm_stats

    def n(actions):
        return norm.normalise(spec, "action", np.asarray(actions))

    mean_first = np.mean([n(t) for _, t in firsts(train_eps)], axis=0)
    val = firsts(val_eps)
    err, base, swap = [], [], []
    for j, (obs, target) in enumerate(val):
        pred = n(policy.predict(obs, seed=seed).actions)
        other = replace(obs, images=val[(j + 1) % len(val)][0].images)
        err.append(np.abs(pred - n(target)).mean())
        base.append(np.abs(mean_first - n(target)).mean())
        swap.append(np.abs(n(policy.predict(other, seed=seed).actions) - pred).mean())
    return {"episodes": len(val), "error": float(np.mean(err)),
            "mean_baseline": float(np.mean(base)), "image_swap": float(np.mean(swap))}


if __name__ == "__main__":
    main()
