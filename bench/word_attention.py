"""Where the action decoder looks: the share of its cross-attention on the instruction's goal
words (issue 15: whether a VLN checkpoint uses the words), per checkpoint, beside its language
probe from its training log.

    python bench/word_attention.py --data data/c400 --out out/word_attention \\
        --run shipped checkpoints/vln_goto_tiny --run "seed 1" runs/A_1

For ``--samples`` training samples of DATA (the same ones for every checkpoint), one flow
time each: the decoder's attention weights over the backbone's tokens, averaged over its
blocks, heads and action tokens, and summed over the goal words' tokens (those that change
when the instruction names another goal, ``train.next_goal``). ``uniform`` is those tokens'
share of the context: attention spread evenly would give that. Writes ``word_attention.json``
and ``word_attention.png``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from curves import body_curves  # bench/, beside this script

from qwen_vla_ros.learning.train import LOG_FILE
from qwen_vla_ros.results import save_results


def goal_span(ids: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Positions of ``ids`` between its common prefix and common suffix with ``other``."""
    n = min(len(ids), len(other))
    start = 0
    while start < n and ids[start] == other[start]:
        start += 1
    end = 0
    while end < n - start and ids[len(ids) - 1 - end] == other[len(other) - 1 - end]:
        end += 1
    return torch.arange(start, len(ids) - end)


def cross_attention(policy, observations, targets, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the decoder's cross-attention weights [B, L] over the context tokens, averaged over
    blocks, heads and action tokens, at one flow time per sample; the context mask [B, L]),
    from the queries each block computes in ``policy.loss``."""
    queries: list[torch.Tensor] = []
    hooks = [blk.cross_q.register_forward_hook(lambda _m, _i, out: queries.append(out))
             for blk in policy.decoder.blocks]
    try:
        with torch.no_grad():
            hidden, mask = policy.features(observations)
            policy.loss(observations, targets, features=(hidden, mask),
                        generator=torch.Generator().manual_seed(seed))
            weights = []
            for blk, q in zip(policy.decoder.blocks, queries, strict=True):
                k = blk.context_kv(hidden)[0]  # [B, heads, L, dh]
                logits = blk._split(q) @ k.transpose(-1, -2) / k.shape[-1] ** 0.5
                logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
                weights.append(logits.softmax(-1).mean(dim=(1, 2)))
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(weights).mean(0), mask


def goal_word_attention(policy, observations, targets, reword: Callable[[str], str | None],
                        seed: int = 0) -> dict[str, float]:
    """Mean over the samples of the attention share on the goal words, and of their share of
    the context (``uniform``)."""
    attention, mask = cross_attention(policy, observations, targets, seed)
    first = policy.config.instruction_first

    def ids(o):
        spec = policy.spec(o.embodiment)
        images, order = policy.camera_inputs(spec, o)
        return policy.backbone.prepare_batch([(images, order, spec.prompt, o.instruction)],
                                             first)["input_ids"][0]

    shares, uniform = [], []
    for i, o in enumerate(observations):
        span = goal_span(ids(o), ids(replace(o, instruction=reword(o.instruction))))
        shares.append(float(attention[i, span].sum()))
        uniform.append(len(span) / int(mask[i].sum()))
    return {"goal_words": float(np.mean(shares)), "uniform": float(np.mean(uniform))}


def last_language_probe(checkpoint: Path) -> float | None:
    """The VLN body's last language probe in the checkpoint's training log (None: none)."""
    log = checkpoint / LOG_FILE
    if not log.exists():
        return None
    probes = body_curves(json.loads(log.read_text())).get("vln", {}).get("language")
    return probes[-1][1] if probes else None


def plot(results: dict[str, dict[str, float | None]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, r in results.items():
        x = r["goal_words"] / r["uniform"]
        y = r["language_probe"] if r["language_probe"] is not None else float("nan")
        ax.plot(x, y, "o")
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("decoder attention on the goal words / their share of the context")
    ax.set_ylabel("language probe (loss told another goal / own)")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from qwen_vla_ros.learning.dataset import DatasetSettings, load_episodes, training_settings
    from qwen_vla_ros.learning.train import Samples, next_goal
    from qwen_vla_ros.model.policy import QwenVLAPolicy

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", nargs=2, action="append", required=True, metavar=("LABEL", "DIR"))
    ap.add_argument("--data", type=Path, required=True, help="vln_goto bags (or a pack)")
    ap.add_argument("--cache", type=Path, help="decoded-frame cache (default DATA/cache)")
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--seed", type=int, default=7, help="draws the samples")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    results: dict[str, dict[str, float | None]] = {}
    chosen = None
    loaded: dict[DatasetSettings, Samples] = {}  # checkpoints that read the data alike
    for label, directory in args.run:
        policy = QwenVLAPolicy.from_pretrained(directory).eval()
        spec = policy.spec("vln")
        settings = training_settings(spec, DatasetSettings(embodiment="vln"),
                                     policy.backbone.pixels.resize_rule)
        if settings not in loaded:
            episodes, _ = load_episodes([args.data], spec, settings,
                                        cache=args.cache or args.data / "cache",
                                        log=lambda _: None)
            loaded[settings] = Samples(episodes, "vln", spec.cameras)
        samples = loaded[settings]
        if chosen is None:  # the same samples for every checkpoint
            chosen = np.random.default_rng(args.seed).choice(len(samples), args.samples,
                                                             replace=False)
        observations, targets = samples.batch(chosen)
        r: dict[str, float | None] = dict(goal_word_attention(policy, observations, targets,
                                                              next_goal))
        r["language_probe"] = last_language_probe(Path(directory))
        results[label] = r
        print(f"{label:>24}: goal words {r['goal_words']:.4f} of the decoder's attention "
              f"({r['goal_words'] / r['uniform']:.2f}x their share {r['uniform']:.4f}); "
              f"language probe {r['language_probe']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_results(args.out / "word_attention.json", {"samples": args.samples, "seed": args.seed,
                                                    "runs": results})
    plot(results, args.out / "word_attention.png")
    print(f"-> {args.out / 'word_attention.png'}")


if __name__ == "__main__":
    main()
