"""Figures written as JSON files: benchmarks, evaluations, live-session stats."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vivify.errors import VivifyError
from vivify.io.files import forget_temp, make_temp_beside, refuse_special_target, remove_temp


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
        forget_temp(temp)
    except OSError as error:
        if temp is not None:
            remove_temp(temp)
        raise VivifyError(f"{path}: cannot write ({error.strerror or error})") from None


def check_report_path(path: str | Path, inputs: Sequence[str | Path], overwrite: bool,
                      output: str | Path | None = None) -> None:
    """Refuse, before any measuring, a figures file that is an input or the output video, that exists (without
    `overwrite`), or that cannot be written (its folder is made as the figures are written)."""
    from vivify.io.writers import refuse_input_as_output  # the writers load PyAV: only where a report is asked for

    refuse_special_target(os.fspath(path), Path(os.path.abspath(path)))
    if os.path.isdir(path):
        raise VivifyError(f"{path}: is a folder; name a file for the figures")
    refuse_input_as_output(path, *inputs)
    if output is not None and os.path.abspath(path) == os.path.abspath(output):
        raise VivifyError(f"{path}: is the output video too; choose another file for the figures")
    if os.path.lexists(path) and not overwrite:
        raise VivifyError(f"{path}: already exists (use --overwrite)")
    folder = next((parent for parent in Path(os.path.abspath(path)).parents if parent.exists()), None)
    if folder is None or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise VivifyError(f"{path}: cannot write there")
    if folder == Path(os.path.abspath(path)).parent:  # where the file goes exists: try it (a read-only mount)
        remove_temp(make_temp_beside(str(path), Path(path)))


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value
