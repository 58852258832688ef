"""Temporary files beside an output, renamed onto it once it is complete: nothing half-written is left."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from vivify.errors import VivifyError


def make_temp_beside(display: str, out: Path, folder: bool = False) -> Path:
    """Create and return a new hidden, empty temporary file (or folder) beside `out`, with the modes that
    the umask gives new files: renamed onto `out`, it is an ordinary file. `display` names `out` in errors."""
    for _ in range(100):
        temp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
        try:
            if folder:
                os.mkdir(temp, 0o777)  # modes honour the umask, unlike tempfile's 0600/0700
            else:
                os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return temp
        except FileExistsError:
            continue
        except OSError as error:
            raise VivifyError(f"{display}: cannot write to '{out.parent}' ({error.strerror})") from None
    raise VivifyError(f"{display}: cannot create a temporary file in '{out.parent}'")
