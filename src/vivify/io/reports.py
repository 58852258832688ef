"""Figures written as JSON files: benchmarks, evaluations, live-session stats."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def write_json(path: str | Path, report: Any) -> None:
    """`report` as indented JSON in `path`, its folder made first: figures that took minutes to measure are
    not lost to a folder that does not exist yet. JSON has no NaN or infinity: such figures (mostly ones
    not measured) are written as null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite_or_null(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value
