"""Benchmark and evaluation figures: JSON output and a success rate's interval (imports
nothing heavy: bench roles run it in subprocesses)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def save_results(path: str | Path | None, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` (None: nothing) and say where."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    print(f"wrote {out}")


def wilson_interval(successes: int, episodes: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (95 % for z = 1.96): with 20 episodes a
    policy's figure moves by several episodes on its seeds alone, and this says how many."""
    if not 0 <= successes <= episodes:
        raise ValueError(f"need 0 <= successes <= episodes, got {successes}/{episodes}")
    if episodes == 0:
        return 0.0, 1.0
    p, n = successes / episodes, episodes
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def made_after(result: Path, checkpoint: Path) -> bool:
    """Whether the file ``result`` exists and was written after every file of the checkpoint
    folder ``checkpoint`` (a result read back must not belong to older weights)."""
    written = max((f.stat().st_mtime for f in checkpoint.glob("*")), default=None)
    return result.exists() and written is not None and result.stat().st_mtime > written


def pool_evals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several eval.json of one checkpoint and task (e.g. two sets of seeds) as one figure:
    successes over episodes that name a known object, its Wilson interval, mean SPL weighted
    by episodes, the seeds. Refuses results of different checkpoints or tasks, and seeds
    counted twice."""
    if not results:
        raise ValueError("no evaluations to pool")
    for key in ("checkpoint", "task"):
        # one checkpoint under two paths (a link, a relative path) is one checkpoint
        values = {os.path.realpath(str(r.get(key))) if key == "checkpoint" else str(r.get(key))
                  for r in results}
        if len(values) > 1:
            raise ValueError(f"evaluations of different {key}s cannot be pooled: {values}")
    # an episode is its seed and, in the language check, the object named from that start
    seeds = [(row["seed"], row.get("target")) for r in results for row in r["per_episode"]]
    if len(set(seeds)) < len(seeds):
        raise ValueError("a seed is in more than one of the pooled evaluations")
    wins = sum(int(r["successes"]) for r in results)
    # success and SPL count the episodes whose instruction names a known object
    known = [int(r["episodes"]) - int(r.get("episodes_naming_no_known_object", 0))
             for r in results]
    counted = sum(known)
    spl = [(r["spl"], n) for r, n in zip(results, known, strict=True)
           if r.get("spl") is not None]
    return {"checkpoint": results[0].get("checkpoint"), "task": results[0].get("task"),
            "successes": wins, "episodes": counted,
            "success_rate": wins / counted if counted else 0.0,
            "success_ci95": list(wilson_interval(wins, counted)),
            "spl": sum(s * n for s, n in spl) / sum(n for _, n in spl) if spl else None,
            "seeds": sorted({s for s, _ in seeds})}
