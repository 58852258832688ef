"""One long animation rendered as chunks in parallel (on a Ray cluster), joined without a seam.

Every chunk's animator is calibrated on the same reference frame and landmarks, and renders some frames
before its own first one and drops them: the landmark filters (One-Euro, time constants of a few frames)
then arrive at the chunk's first frame in the state a single run would have, so the join shows no step.
Chunks are kept losslessly (RGB H.264 at qp 0) in a folder the workers share, and the join writes them, in order,
through the usual writer: one encode, the driving audio, the provenance marks.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import av
import numpy as np

from vivify.io.image import fit_portrait, load_portrait
from vivify.io.video import count_frames, open_video
from vivify.io.writers import open_writer, refuse_input_as_output
from vivify.progress import Progress
from vivify.provenance.marks import Marks

# How often a caller waiting for chunks hears from `animate_chunked` (its `progress`), to stop it if it wants.
WAIT_SECONDS = 0.5

Calls = list[tuple[Callable, tuple]]
# Runs each `(function, args)` call, in parallel where it can, and yields their results in order, each once it
# (and those before it) are done; calls `waiting()` at least every WAIT_SECONDS while it waits. Closing the
# generator early (`waiting` raised) cancels the calls not done yet.
Runner = Callable[[Calls, Callable[[], None]], Generator[Any, None, None]]

WARMUP_FRAMES = 30  # rendered and dropped before each chunk (about 3 time constants of the filters)
# A chunk writes how many of its frames are done every this many frames, beside its file, with this suffix.
_PROGRESS_EVERY = 10
_PROGRESS_SUFFIX = ".progress"


def chunk_bounds(frames: int, chunks: int) -> list[tuple[int, int]]:
    """[start, end) of `chunks` nearly equal runs of `frames` frames (fewer when there are few frames)."""
    chunks = max(1, min(chunks, frames))
    edges = np.linspace(0, frames, chunks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def reference_of(driving: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first driving frame with a face and its landmarks: every chunk's reference."""
    from vivify.pipeline import first_face

    _, frame, points = first_face(driving)
    return frame, points


def render_chunk(portrait_path: str, driving_path: str, start: int, end: int | None,
                 reference: tuple[np.ndarray, np.ndarray], size: tuple[int, int] | None, max_side: int | None,
                 out_path: str) -> str:
    """Frames [start, end) of the animation (`end` None: to the video's end), losslessly into `out_path`; runs
    anywhere the files are. How many frames are done is written beside it (`rendered_so_far` reads them)."""
    from vivify.animator import Animator
    from vivify.pipeline import tracked

    portrait = fit_portrait(load_portrait(portrait_path), size, max_side)
    first = max(0, start - WARMUP_FRAMES)
    with open_video(driving_path) as video, av.open(out_path, "w") as container:
        # Lossless RGB H.264: exact, and a few times faster to write and read back than FFV1.
        stream = container.add_stream("libx264rgb", rate=video.fps, options={"qp": "0", "preset": "ultrafast"})
        stream.width, stream.height = portrait.shape[1], portrait.shape[0]
        stream.pix_fmt = "rgb24"
        animator = Animator(portrait, rate=float(video.fps), name=str(portrait_path))
        animator.set_reference(*reference)
        frames = itertools.islice(video.frames(first), None if end is None else end - first)
        try:
            for index, (frame, points) in enumerate(tracked(frames, animator.track), start=first):
                rendered = animator.render(frame, points)
                if index >= start:
                    picture = av.VideoFrame.from_ndarray(rendered, format="rgb24")
                    picture.pts = index - start
                    for packet in stream.encode(picture):
                        container.mux(packet)
                    if (index - start + 1) % _PROGRESS_EVERY == 0:
                        _write_progress(out_path, index - start + 1)
        finally:
            animator.close()
        for packet in stream.encode(None):
            container.mux(packet)
    _write_progress(out_path, int(stream.frames))
    return out_path


def _write_progress(chunk_path: str, frames: int) -> None:
    Path(chunk_path + _PROGRESS_SUFFIX).write_text(str(frames))


def rendered_so_far(folder: Path) -> int:
    """Frames the chunks in `folder` have rendered so far (as their `render_chunk`s last wrote)."""
    total = 0
    for path in folder.glob("*" + _PROGRESS_SUFFIX):
        with contextlib.suppress(OSError, ValueError):  # caught while it is being written: counted next time
            total += int(path.read_text())
    return total


def animate_chunked(portrait_path: str | Path, driving_path: str | Path, output: str | Path, *,
                    chunks: int, run: Runner, size: tuple[int, int] | None = None,
                    max_side: int | None = None, overwrite: bool = False, progress: Progress | None = None,
                    marks: Marks | None = None, scratch: str | Path | None = None) -> Path:
    """`vivify.pipeline.animate` split into `chunks`, rendered by `run` (see `Runner`: in parallel where it
    can), and joined. While the chunks render, `progress` is called every `WAIT_SECONDS` with the frames joined
    so far: a caller can stop the job from it (an exception there cancels the chunks still rendering)."""
    refuse_input_as_output(output, portrait_path, driving_path)
    marks = Marks.create(ingredients=(portrait_path, driving_path)) if marks is None \
        else marks.naming_inputs((portrait_path, driving_path))
    reference = reference_of(Path(driving_path))
    with open_video(driving_path) as video:
        fps, has_audio, times = video.fps, video.has_audio, video.frame_times()
        count = video.frame_count or count_frames(driving_path)
    out_size = fit_portrait(load_portrait(portrait_path), size, max_side).shape[1::-1]
    folder = Path(tempfile.mkdtemp(prefix="vivify-chunks-", dir=scratch))
    bounds = chunk_bounds(count, chunks)
    try:
        # The writer opens before anything is rendered, so a bad or existing OUT fails at once, as in `animate`.
        with open_writer(output, fps, out_size, audio_source=driving_path if has_audio else None,
                         overwrite=overwrite, marks=marks, frame_times=times) as writer:
            # The last chunk runs to the end of the video: the frame count may be the container's estimate.
            calls = [(render_chunk, (str(portrait_path), str(driving_path), start,
                                     None if end == bounds[-1][1] else end, reference, size, max_side,
                                     str(folder / f"chunk_{start:08d}.mkv")))
                     for start, end in bounds]
            done = rendered = 0

            def waiting() -> None:
                nonlocal rendered
                if progress is not None:  # the frames rendered, until as many are joined
                    rendered = min(rendered_so_far(folder), count)
                    progress(max(done, rendered), count)

            with contextlib.closing(run(calls, waiting)) as parts:
                for part in parts:
                    with open_video(part) as chunk:
                        for frame in chunk.frames():
                            writer.write(frame)
                            done += 1
                            if progress is not None:  # the bar does not go back from the frames rendered
                                progress(max(done, rendered), count)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return Path(output)


def ray_runner(address: str | None = None, **init: Any) -> Runner:
    """A `Runner` for `animate_chunked` that sends each call to a Ray cluster (`address`; None starts a local
    one with `init`'s options, e.g. num_cpus=2)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **init)
    remote = ray.remote(num_cpus=1)(lambda function, args: function(*args))

    def run(calls: Calls, waiting: Callable[[], None]) -> Generator[Any, None, None]:
        pending = [remote.remote(function, args) for function, args in calls]
        try:
            for task in pending:
                while not ray.wait([task], timeout=WAIT_SECONDS)[0]:
                    waiting()
                yield ray.get(task)
        finally:
            for task in pending:  # nothing happens to those already done
                ray.cancel(task, force=True)

    return run


def local_runner(calls: Calls, waiting: Callable[[], None]) -> Generator[Any, None, None]:
    """A `Runner` with one worker: each call in turn, in this process (`waiting` between them)."""
    for function, args in calls:
        waiting()
        yield function(*args)
