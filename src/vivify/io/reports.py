"""Figures written as JSON files: benchmarks, evaluations, live-session stats."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from vivify.errors import VivifyError
from vivify.io.files import make_temp_beside


def write_json(path: str | Path, report: Any) -> None:
    """`report` as indented JSON in `path`, its folder made first: figures that took minutes to measure are
    not lost to a folder that does not exist yet. Written to a temporary file beside it and renamed, so a
    failure leaves no half-written file. JSON has no NaN or infinity: such figures (mostly ones not measured)
    are written as null. Raises VivifyError naming the file where it cannot be written."""
    path = Path(path)
    text = json.dumps(_finite_or_null(report), indent=2, allow_nan=False) + "\n"
    temp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = make_temp_beside(str(path), path)
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except OSError as error:
        if temp is not None:
            temp.unlink(missing_ok=True)
        raise VivifyError(f"{path}: cannot write ({error.strerror or error})") from None


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value
