"""The audit log: one JSON line per generated output, appended and fsync'd before the output is published.

The rules on deep synthesis ask providers to keep logs of what was generated, from what, by whom. Each
record holds the time, the content id, the output, the inputs' SHA-256, the command and its options, the
signer and the label settings. The file is opened in append mode for every record (O_APPEND: concurrent
writers never interleave within a line) and never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vivify.errors import VivifyError

LOG_NAME = "audit.jsonl"
_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def append_record(folder: Path, record: dict[str, Any]) -> Path:
    """Append `record` (plus the current UTC time) to the log in `folder`; returns the log's path."""
    path = folder / LOG_NAME
    line = json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record},
                      ensure_ascii=False, sort_keys=True) + "\n"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # A path holding bytes that are no character (a name from a system in another encoding) is kept as
            # its JSON escape ("\udcff"): the log stays UTF-8, and reads back as the same path.
            os.write(fd, line.encode("utf-8", "backslashreplace"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise VivifyError(f"{path}: cannot write the audit log ({error.strerror})") from None
    return path


def read_records(folder: Path) -> Iterator[dict[str, Any]]:
    """The log's records, oldest first."""
    path = folder / LOG_NAME
    if not path.exists():
        return
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.strip():
                yield json.loads(line)
