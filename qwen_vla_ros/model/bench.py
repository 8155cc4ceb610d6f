"""Latency and memory benchmark of one action chunk (used by the CLI and bench/model.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import resource
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.model.policy import Observation
from qwen_vla_ros.model.presets import build_preset, count_parameters

BENCH_CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# name: (flow steps (None: --steps), layout cache, compiled: "" (eager), "decoder" (the flow
# step only) or "all" (and the backbone's language model)); timed in one run, interleaved
VARIANTS = {"eager": (None, True, ""), "eager, 4 steps": (4, True, ""),
            "no layout cache": (None, False, ""), "compiled decoder": (None, True, "decoder"),
            "compiled": (None, True, "all"), "compiled, 4 steps": (4, True, "all")}


class OverBudget(BaseException):
    """Raised into a warm-up (a compile, say) still running when the budget ends. A
    BaseException, so the policy's compile fallback (``except Exception``) does not take it
    for a compiler failure."""


def run_model_bench(preset: str = "tiny", device: str = "cpu", dtype: str = "float32",
                    iters: int = 20, warmup: int = 3, steps: int = 10, seed: int = 0,
                    variants: tuple[str, ...] = ("eager",),
                    compile_mode: str | None = None,
                    log: Callable[[str], None] = lambda _: None,
                    max_seconds: float | None = None) -> dict[str, Any]:
    """3 cameras at 480x640, a 50-step ALOHA chunk, ``steps`` flow steps; each of
    ``variants`` (``VARIANTS``) timed in turn, iteration by iteration; a compiled variant's
    warm-up includes compiling (``compile_mode``: torch.compile's mode). ``log`` gets a line
    per stage as it ends (build, each warm-up, the first timed chunk), so a run cut short by
    a time limit still shows how far it got. ``max_seconds``: the budget of building and
    warming up (compiling); a warm-up still running when it ends is interrupted (SIGALRM,
    from the main thread only) and it and the variants after it are left out (``skipped``),
    so a slow compile still leaves the other variants' figures. The timed loop runs
    ``iters`` rounds after it."""
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    spec = dataclasses.replace(load_embodiment("aloha"), cameras=BENCH_CAMERAS)
    t0 = time.perf_counter()
    policy = build_preset(preset, [spec], seed=seed, device=device, dtype=torch_dtype)
    build_s = time.perf_counter() - t0
    log(f"built {preset} on {device} ({dtype}) in {build_s:.1f} s")
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for c in BENCH_CAMERAS}
    obs = Observation(images=images, state=np.zeros(spec.state_dim),
                      instruction="transfer the cube to the other arm", embodiment=spec.name)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    if any(VARIANTS[v][2] for v in variants):
        policy.compile_for_inference(mode=compile_mode,
                                     backbone=any(VARIANTS[v][2] == "all" for v in variants))

    def run(name: str, i: int) -> dict[str, float]:
        n, cache, compiled = VARIANTS[name]
        policy.backbone.layout_cache = cache
        policy.use_compiled(bool(compiled))
        if compiled == "decoder":
            policy.backbone.use_compiled(False)
        return policy.predict(obs, seed=i, steps=n or steps).timing_ms

    warm: dict[str, float] = {}
    skipped: list[str] = []
    with _deadline(None if max_seconds is None else t0 + max_seconds):
        for name in variants:
            t = time.perf_counter()
            try:
                for i in range(warmup):
                    run(name, i)
            except OverBudget:
                skipped = list(variants[variants.index(name):])
                log(f"over the {max_seconds:.0f} s budget {time.perf_counter() - t:.0f} s "
                    f"into warming up {name!r}; skipped: {skipped}")
                break
            warm[name] = time.perf_counter() - t
            log(f"warm-up {name!r}: {warm[name]:.1f} s ({warmup} chunks)")
    variants = tuple(v for v in variants if v in warm)
    stages: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    for i in range(iters):
        for name in variants:
            for k, v in run(name, i).items():
                stages[name].setdefault(k, []).append(v)
            if i == 0:
                log(f"first timed {name!r}: total {stages[name]['total'][0]:.1f} ms")
    policy.backbone.layout_cache = True
    result: dict[str, Any] = {
        "preset": preset, "device": device, "dtype": dtype, "iters": iters, "flow_steps": steps,
        "cameras": len(BENCH_CAMERAS), "image": [480, 640], "horizon": spec.horizon,
        "action_dim": spec.action_dim, "build_s": round(build_s, 2),
        "params": count_parameters(preset),
        "latency_ms": {k: {"p50": statistics.median(v), "p99": percentile(v, 99)}
                       for k, v in (stages[variants[0]] if variants else {}).items()},
        "variants": {name: {"warmup_s": round(warm[name], 2),
                            "latency_ms": {k: {"p50": statistics.median(v),
                                               "p99": percentile(v, 99)}
                                           for k, v in st.items()}}
                     for name, st in stages.items()},
        "skipped": skipped, "compile_mode": compile_mode, "compile_error": policy.compile_error
        or policy.backbone.compile_error,
        "torch": torch.__version__, "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        result["gpu"] = torch.cuda.get_device_name()
    else:
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        result["cpu"] = platform.processor() or platform.machine()
    return result


@contextlib.contextmanager
def _deadline(at: float | None) -> Iterator[None]:
    """Raise ``OverBudget`` in the main thread at ``at`` (perf_counter time) if still inside."""
    if at is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum, frame):
        raise OverBudget

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(at - time.perf_counter(), 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def format_result(r: dict[str, Any]) -> str:
    lines = [f"preset={r['preset']} device={r['device']} dtype={r['dtype']} "
             f"iters={r['iters']} flow_steps={r['flow_steps']} cameras={r['cameras']} "
             f"horizon={r['horizon']} params={r['params']}"]
    for name, var in r.get("variants", {"": {"latency_ms": r["latency_ms"]}}).items():
        if name:
            lines.append(f"  {name} (warm-up {var['warmup_s']:.1f} s):")
        for stage, v in var["latency_ms"].items():
            lines.append(f"  {stage:>12}: p50 {v['p50']:8.2f} ms   p99 {v['p99']:8.2f} ms")
    if len(r.get("variants", {})) > 1:
        first, *rest = r["variants"]
        base = r["variants"][first]["latency_ms"]["total"]["p50"]
        for name in rest:
            ratio = r["variants"][name]["latency_ms"]["total"]["p50"] / base
            lines.append(f"  total p50 {name} / {first}: {ratio:.2f}")
    if "peak_gpu_memory_gb" in r:
        lines.append(f"  peak GPU memory {r['peak_gpu_memory_gb']:.2f} GB on {r['gpu']}")
    else:
        lines.append(f"  peak RSS {r['peak_rss_gb']:.2f} GB (CPU, {r['torch_threads']} threads)")
    return "\n".join(lines)
