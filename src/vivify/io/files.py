"""Temporary files beside an output, renamed onto it once it is complete: nothing half-written is left."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
from pathlib import Path

from vivify.errors import VivifyError

log = logging.getLogger(__name__)

# Temporary files made here and not yet renamed into place or removed. An interrupt can land where no cleanup
# of the code that made one runs yet (between its creation and the `with` that removes it on errors): the
# command that was interrupted removes what is left here (`remove_unfinished_temps`).
_unfinished: set[Path] = set()


def refuse_special_target(display: str, out: Path) -> None:
    """Raise VivifyError for an output path that names standard output ("-") or an existing device, pipe or
    socket: a finished output is renamed onto its path, which would put a file or a folder of frames in the
    place of `/dev/null` (as root). A symbolic link is fine: the rename replaces the link, not its target."""
    if display == "-":
        raise VivifyError("-: vivify cannot write to standard output; name a file or a folder")
    try:
        mode = os.lstat(out).st_mode
    except OSError:  # not there (yet), or not reachable: the checks that follow say why
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        raise VivifyError(f"{display}: is a device, pipe or socket, not a file or a folder; not writing there")


def make_temp_beside(display: str, out: Path, folder: bool = False) -> Path:
    """Create and return a new hidden, empty temporary file (or folder) beside `out`, with the modes that
    the umask gives new files: renamed onto `out`, it is an ordinary file. `display` names `out` in errors.
    Once renamed into place, the caller calls `forget_temp`; where it is given up, `remove_temp`."""
    for _ in range(100):
        temp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
        _unfinished.add(temp)  # before it exists: an interrupt as it is made still finds it
        try:
            if folder:
                os.mkdir(temp, 0o777)  # modes honour the umask, unlike tempfile's 0600/0700
            else:
                os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return temp
        except FileExistsError:
            _unfinished.discard(temp)  # another's
            continue
        except OSError as error:
            _unfinished.discard(temp)
            raise VivifyError(f"{display}: cannot write to '{out.parent}' ({error.strerror})") from None
    raise VivifyError(f"{display}: cannot create a temporary file in '{out.parent}'")


def forget_temp(temp: Path) -> None:
    """`temp` was renamed into place: it is no longer a temporary file to remove."""
    _unfinished.discard(temp)


def remove_temp(temp: Path) -> None:
    """Remove a temporary file or folder that is given up (ignoring errors: best-effort cleanup)."""
    remove_quietly(temp)
    _unfinished.discard(temp)


def remove_unfinished_temps() -> None:
    """Remove every temporary file made in this process and not yet renamed or removed: for a command that was
    interrupted, whose writers may not have reached their own cleanup."""
    for temp in _unfinished.copy():
        remove_temp(temp)


def remove_quietly(path: Path) -> None:
    """Delete a file or folder tree, ignoring errors (best effort cleanup)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            path.unlink()
    except OSError:
        log.debug("could not remove %s", path, exc_info=True)
