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


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's name, with its family and model numbers where the system gives them: under a hypervisor the
    name can be as bare as "AMD EPYC", the same for generations that differ in speed by several times."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():  # the first processor's block ends at a blank line
                    break
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} logical cores"


def command_line() -> str:
    """This process's command line as a shell would take it, the program by its name (`vivify eval ...`)."""
    argv = list(sys.argv)
    if argv:
        argv[0] = os.path.basename(argv[0])
    return shlex.join(argv)
