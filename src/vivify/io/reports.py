"""Figures written as JSON files: benchmarks, evaluations, live-session stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: str | Path, report: Any) -> None:
    """`report` as indented JSON in `path`, its folder made first: figures that took minutes to measure are
    not lost to a folder that does not exist yet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
