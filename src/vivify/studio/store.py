"""The studio's durable state: users and jobs in one SQLite file in the data folder.

Every change is one transaction, so a server killed at any moment (kill -9) leaves each job in a state it
can resume from: `queued` jobs wait, a `running` job goes back to `queued` when the server starts again
(its output is only ever renamed into place when complete, so nothing half-written is served), `done` and
`failed` jobs stay as they are.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vivify.errors import VivifyError

# Runs a job may have: each start of a run counts, and a server stopped mid-run leaves it running.
MAX_ATTEMPTS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    eta_seconds REAL,
    stage TEXT,
    stage_progress REAL,
    error TEXT,
    params TEXT NOT NULL,
    inputs TEXT NOT NULL,
    consent TEXT NOT NULL,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created);
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs (user_id, created);
"""
# Columns added since the first schema, added to a database made before them as it is opened.
_ADDED_COLUMNS = (("jobs", "stage", "TEXT"), ("jobs", "stage_progress", "REAL"))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    id: int
    name: str


@dataclass(frozen=True)
class Job:
    id: str
    user_id: int
    kind: str
    status: str
    progress: float
    eta_seconds: float | None
    # What a running job is doing ("picking references", "rendering"; None before its first report) and its share
    # of that: a grid's pass that picks the references reports there while `progress`, the job's, stays at 0.
    stage: str | None
    stage_progress: float | None
    error: str | None
    params: dict[str, Any]
    inputs: dict[str, Any]
    consent: dict[str, Any]
    result: str | None
    attempts: int
    created: str
    started: str | None
    finished: str | None

    def public(self) -> dict[str, Any]:
        """What the job's owner sees through the API."""
        names = [Path(path).name for paths in self.inputs.values() for path in paths]
        return {"id": self.id, "kind": self.kind, "status": self.status, "progress": self.progress,
                "eta_seconds": self.eta_seconds, "stage": self.stage, "stage_progress": self.stage_progress,
                "error": self.error, "created": self.created,
                "started": self.started, "finished": self.finished, "inputs": names}


def without_paths(message: str, inputs: dict[str, list[str]]) -> str:
    """`message` with every input's path on the server replaced by its file name: users see the names of
    their own files, never the server's folders."""
    for path in (p for paths in inputs.values() for p in paths):
        message = message.replace(path, Path(path).name)
    return message


# What a job not running (or just claimed) has of a running job's reports.
_NO_STAGE = "stage = NULL, stage_progress = NULL"
_NO_ESTIMATE = f"eta_seconds = NULL, {_NO_STAGE}"
# The stored hash of a revoked token starts with this (a SHA-256 in hex never does).
_REVOKED = "revoked:"


def unusable_database(path: Path, error: sqlite3.Error | OSError) -> VivifyError:
    """The error for a studio database that cannot be opened or read (corrupt, truncated, on a read-only disk)."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return VivifyError(f"{path}: cannot use this database ({reason})")


class Store:
    """Users and jobs in `folder`/studio.sqlite; safe to use from several threads."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "studio.sqlite"
        self._lock = threading.Lock()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")  # a finished job survives a power cut, not just a kill
                self._db.executescript(_SCHEMA)
                self._add_columns()
        except (sqlite3.Error, OSError) as error:
            raise unusable_database(self.path, error) from None

    def _add_columns(self) -> None:
        """Add the columns of `_ADDED_COLUMNS` that a database made by an earlier version lacks."""
        def has(table: str, column: str) -> bool:
            return column in {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}

        for table, column, kind in _ADDED_COLUMNS:
            if not has(table, column):
                try:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError:  # another server on the same file added it meanwhile
                    if not has(table, column):
                        raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- users ---------------------------------------------------------------------------------------------

    def add_user(self, name: str) -> str:
        """Create a user; returns its API token (only its hash is stored)."""
        if not name or not name.isprintable() or len(name) > 100 or name != name.strip():
            # Spaces around a name would make a second user look like the first in the consent and audit records.
            raise VivifyError(f"invalid user name {name!r}: use 1-100 printable characters, no spaces around them")
        token = secrets.token_urlsafe(32)
        try:
            self._run("INSERT INTO users (name, token_sha256, created) VALUES (?, ?, ?)", (name, _hash(token), now()))
        except sqlite3.IntegrityError:
            raise VivifyError(f"user {name!r} already exists") from None
        return token

    def users(self) -> list[tuple[str, str, bool]]:
        """Every user as (name, created, revoked), by name."""
        rows = self._run("SELECT name, created, token_sha256 FROM users ORDER BY name")
        return [(row["name"], row["created"], row["token_sha256"].startswith(_REVOKED)) for row in rows]

    def new_token(self, name: str) -> str:
        """Give user `name` a new API token and return it: the old one (lost, or leaked) stops working."""
        token = secrets.token_urlsafe(32)
        self._set_token(name, _hash(token))
        return token

    def revoke(self, name: str) -> None:
        """Stop user `name`'s token from working; the user's jobs and records stay (`new_token` lets them in
        again)."""
        self._set_token(name, _REVOKED + secrets.token_hex(16))  # no token hashes to it; unique like a hash

    def _set_token(self, name: str, token_sha256: str) -> None:
        with self._lock:
            changed = self._db.execute("UPDATE users SET token_sha256 = ? WHERE name = ?", (token_sha256, name))
        if changed.rowcount == 0:
            raise VivifyError(f"no user {name!r}")

    def user_for_token(self, token: str) -> User | None:
        rows = self._run("SELECT id, name FROM users WHERE token_sha256 = ?", (_hash(token),))
        return User(rows[0]["id"], rows[0]["name"]) if rows else None

    # -- jobs ----------------------------------------------------------------------------------------------

    def create_job(self, user: User, kind: str, params: dict[str, Any], inputs: dict[str, Any],
                   consent: dict[str, Any], job_id: str | None = None, max_waiting: int | None = None) -> Job:
        """Queue a job. With `max_waiting`, raises TooManyJobs instead where the user has that many jobs not
        finished yet: counted and inserted in one transaction, so requests at the same moment (on this server
        or another on the same file) cannot all slip under the limit."""
        job_id = job_id or new_job_id()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                waiting = self._waiting(user)
                if max_waiting is not None and waiting >= max_waiting:
                    raise TooManyJobs(waiting)
                self._db.execute(
                    "INSERT INTO jobs (id, user_id, kind, status, params, inputs, consent, created) "
                    "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                    (job_id, user.id, kind, json.dumps(params), json.dumps(inputs), json.dumps(consent), now()))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return self.job(job_id)

    def job(self, job_id: str, user: User | None = None) -> Job | None:
        """The job, or None when there is none (or it is not `user`'s)."""
        if user is None:
            rows = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,))
        else:
            rows = self._run("SELECT * FROM jobs WHERE id = ? AND user_id = ?", (job_id, user.id))
        return _job(rows[0]) if rows else None

    def jobs(self, user: User) -> list[Job]:
        return [_job(row) for row in self._run(
            "SELECT * FROM jobs WHERE user_id = ? ORDER BY created DESC", (user.id,))]

    def waiting(self, user: User) -> int:
        """The user's jobs not finished yet."""
        with self._lock:
            return self._waiting(user)

    def _waiting(self, user: User) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')",
                               (user.id,)).fetchone()
        return int(row[0])

    def claim(self) -> Job | None:
        """The oldest queued job, now marked running (atomically: two workers never get the same job)."""
        rows = self._run(
            "UPDATE jobs SET status = 'running', started = ?, attempts = attempts + 1, progress = 0, "
            f"{_NO_ESTIMATE} WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1) "
            "RETURNING *", (now(),))
        return _job(rows[0]) if rows else None

    def progress(self, job_id: str, progress: float, eta_seconds: float | None, stage: str | None = None,
                 stage_progress: float | None = None) -> bool:
        """Record progress; False when the job is gone (deleted meanwhile)."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET progress = ?, eta_seconds = ?, stage = ?, stage_progress = ? "
                "WHERE id = ? AND status = 'running'", (progress, eta_seconds, stage, stage_progress, job_id))
            return cursor.rowcount == 1

    def finish(self, job_id: str, result: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE jobs SET status = 'done', progress = 1, eta_seconds = 0, {_NO_STAGE}, result = ?, "
                "finished = ? WHERE id = ? AND status = 'running'", (result, now(), job_id))
            return cursor.rowcount == 1

    def fail(self, job_id: str, error: str) -> None:
        self._run(f"UPDATE jobs SET status = 'failed', error = ?, finished = ?, {_NO_ESTIMATE} "
                  "WHERE id = ? AND status = 'running'", (error, now(), job_id))

    def release(self, job_id: str) -> None:
        """A running job that the server stops on purpose goes back to the queue, and the run it started does
        not count against its attempts (those are for runs that stopped the server)."""
        self._run(f"UPDATE jobs SET status = 'queued', attempts = attempts - 1, progress = 0, {_NO_ESTIMATE} "
                  "WHERE id = ? AND status = 'running'", (job_id,))

    def delete(self, job_id: str) -> None:
        self._run("DELETE FROM jobs WHERE id = ?", (job_id,))

    def requeue_running(self) -> int:
        """At start-up: jobs a stopped server was running go back to the queue, to be run again from the start;
        one that was running at each of its last MAX_ATTEMPTS stops (it may be what stops the server, e.g. out
        of memory) fails instead, so that it cannot stop it for ever."""
        with self._lock:
            self._db.execute(
                f"UPDATE jobs SET status = 'failed', error = ?, finished = ?, {_NO_ESTIMATE} "
                "WHERE status = 'running' AND attempts >= ?",
                (f"the server stopped while running this job {MAX_ATTEMPTS} times; it is not run again", now(),
                 MAX_ATTEMPTS))
            cursor = self._db.execute(f"UPDATE jobs SET status = 'queued', progress = 0, {_NO_ESTIMATE} "
                                      "WHERE status = 'running'")
            return cursor.rowcount


class TooManyJobs(VivifyError):
    """The user has as many jobs waiting as allowed; `waiting` says how many."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} jobs waiting")
        self.waiting = waiting


def new_job_id() -> str:
    return uuid.uuid4().hex


def _job(row: sqlite3.Row) -> Job:
    return Job(id=row["id"], user_id=row["user_id"], kind=row["kind"], status=row["status"],
               progress=row["progress"], eta_seconds=row["eta_seconds"], stage=row["stage"],
               stage_progress=row["stage_progress"], error=row["error"],
               params=json.loads(row["params"]), inputs=json.loads(row["inputs"]), consent=json.loads(row["consent"]),
               result=row["result"], attempts=row["attempts"], created=row["created"], started=row["started"],
               finished=row["finished"])
