"""The studio's worker: takes queued jobs one at a time and runs them through the same pipeline as the CLI."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vivify.errors import VivifyError
from vivify.progress import RENDERING
from vivify.provenance.marks import Marks
from vivify.studio.store import Job, Store, without_paths

if TYPE_CHECKING:
    from vivify.distributed import Runner

log = logging.getLogger(__name__)
_PROGRESS_EVERY = 0.5  # s between progress updates written to the store
# A dub renders the video's own faces. The gate at upload answers at once from a few frames; before a dub
# renders, a frame every this many seconds is checked too (about 0.3 s each at 512²), so that a protected face
# shown for a moment between those few is refused as well.
_DUB_GATE_SECONDS = 1.0


@dataclass(frozen=True)
class Cluster:
    """Where chunks of a long animation render: `run` takes the calls (see `vivify.distributed`)."""

    run: Runner
    chunks: int


class _Deleted(Exception):
    """The job was deleted while it ran: stop rendering it."""


class _Stopping(Exception):
    """The server is stopping: put the job back in the queue."""


def run_job(job: Job, output: Path, progress: Any, marks: Marks, cluster: Cluster | None = None) -> Path:
    """Render `job` into `output` (replacing what a stopped earlier attempt may have left); animations in
    chunks on `cluster` when there is one."""
    from vivify.pipeline import animate, sing
    from vivify.speaking import dub, speak
    from vivify.speech.audio import DEFAULT_MAX_SECONDS

    inputs, params = job.inputs, job.params
    first = {name: paths[0] for name, paths in inputs.items() if paths}
    common = {"overwrite": True, "progress": progress, "marks": marks}
    speech = {"audio": first.get("audio"), "text": params.get("text"), "lang": params.get("lang", "en"),
              "max_seconds": params.get("max_seconds", DEFAULT_MAX_SECONDS)}
    if job.kind == "animate" and cluster is not None:
        from vivify.distributed import animate_chunked

        # The chunks are written beside the result, in the data folder that every node of the cluster shares:
        # a folder in the server's own /tmp does not exist on the other nodes.
        return animate_chunked(first["portrait"], first["driving"], output, chunks=cluster.chunks,
                               run=cluster.run, scratch=output.parent, **common)
    if job.kind == "animate":
        return animate(first["portrait"], first["driving"], output, **common)
    if job.kind == "sing":
        return sing(first["driving"], inputs["portrait"], output, **common)
    if job.kind == "speak":
        return speak(first["portrait"], output, **speech, **common)
    return dub(first["driving"], output, **speech, **common)


class Worker:
    """Runs the store's queued jobs in a background thread until `stop`."""

    def __init__(self, store: Store, results: Path, poll_seconds: float = 0.5, cluster: Cluster | None = None,
                 identities: Any | None = None) -> None:
        """`identities` (a `ProtectedIdentities`): dubs of a video that shows one of them fail."""
        self.store = store
        self.cluster = cluster
        self.identities = identities
        self.results = results
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vivify-studio-worker", daemon=True)

    def start(self) -> None:
        self.results.mkdir(parents=True, exist_ok=True)
        # A server killed mid-job leaves its writer's hidden temporary output behind (".ID.mp4.tmp-XXXX");
        # nothing runs yet, so every one of them is stale.
        for stale in self.results.glob(".*.tmp-*"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim()
            if job is None:
                self._stop.wait(self.poll_seconds)
                continue
            self.run(job)

    def run(self, job: Job) -> None:
        output = self.results / f"{job.id}.mp4"
        if output.exists():  # an earlier attempt finished the file (outputs appear only when complete)
            if not self.store.finish(job.id, str(output)):
                output.unlink(missing_ok=True)
            return
        started = last = time.monotonic()  # `last`: when progress was last written
        # When the frames began to render: the job's start, or the end of a pass that picks the references (its
        # time, seconds to minutes, says nothing of the frames' pace).
        rendering_since = started

        def progress(done: int, total: int | None, stage: str = RENDERING) -> None:
            nonlocal last, rendering_since
            if self._stop.is_set():
                raise _Stopping
            now = time.monotonic()
            if stage != RENDERING:
                rendering_since = now
            if total and now - last >= _PROGRESS_EVERY:
                last = now
                # 1 only once the file is complete and marked; nothing rendered while the references are picked,
                # but a job deleted meanwhile is found.
                share = min(done / total, 0.99) if stage == RENDERING else 0.0
                # No estimate before the first frame is done (chunks rendering on a cluster).
                eta = (now - rendering_since) * (1 - share) / share if share > 0 else None
                if not self.store.progress(job.id, share, eta, stage, min(done / total, 1.0)):
                    raise _Deleted

        inputs = [path for paths in job.inputs.values() for path in paths]
        try:
            marks = Marks.create(ingredients=inputs, command=("vivify", "serve", job.kind),
                                 options={"job": job.id, "user": job.consent.get("user"), "consent": job.consent})
            if job.kind == "dub":
                self._refuse_protected_frames(job.inputs["driving"][0])
            run_job(job, output, progress, marks, self.cluster)
        except _Deleted:
            output.unlink(missing_ok=True)
            return
        except _Stopping:
            output.unlink(missing_ok=True)
            self.store.release(job.id)  # runs first at the next start, and this run does not count
            return
        except VivifyError as error:
            self.store.fail(job.id, without_paths(str(error), job.inputs))
            return
        except Exception as error:  # a bug must not stop the queue: the job fails, the next one runs
            log.exception("job %s failed", job.id)
            self.store.fail(job.id, f"internal error ({type(error).__name__}); the server log has the details")
            return
        if not self.store.finish(job.id, str(output)):
            output.unlink(missing_ok=True)  # deleted while it was being finished

    def _refuse_protected_frames(self, video_path: str) -> None:
        """Raise VivifyError where a frame of the video, one every _DUB_GATE_SECONDS, shows a protected face."""
        if self.identities is None:
            return
        from vivify.io.video import open_video

        with open_video(video_path) as video:
            rate = float(video.fps)
            step = max(1, round(_DUB_GATE_SECONDS * rate))
            for index, frame in enumerate(video.frames()):
                if self._stop.is_set():
                    raise _Stopping
                if index % step == 0:
                    self.identities.refuse(frame, Path(video_path).name, index / rate)
