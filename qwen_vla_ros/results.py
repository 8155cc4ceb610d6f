"""Benchmark figures to JSON (imports nothing heavy: bench roles run it in subprocesses)."""

from __future__ import annotations

import json
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
