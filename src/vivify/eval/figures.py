"""What every eval and bench prints beside its figures: the figures themselves ("n/a" where not measured), the
machine and the command line that measured them."""

from __future__ import annotations

import math
import os
import platform
import shlex
import sys
from collections.abc import Iterable

import numpy as np


def figure(value: float | None, spec: str = ".3f") -> str:
    """`value` formatted by `spec` ("+d" for a lag, ".2%" for a rate); "n/a" where it was not measured (None,
    NaN) or is no figure (infinite), never "nan" or "inf"."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def measured_mean(values: Iterable[float]) -> float:
    """The mean of the values that were measured (finite); NaN where none was."""
    measured = [value for value in values if math.isfinite(value)]
    return float(np.mean(measured)) if measured else math.nan


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} logical cores"


def command_line() -> str:
    """This process's command line as a shell would take it, the program by its name (`vivify eval ...`)."""
    argv = list(sys.argv)
    if argv:
        argv[0] = os.path.basename(argv[0])
    return shlex.join(argv)
