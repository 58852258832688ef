"""`animate`: read → landmarks → motion → render → write, streamed one frame at a time."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from vivify.animator import MIN_FACE_PIXELS, Animator
from vivify.animators import AnimatorProcesses
from vivify.compose.grid import Grid, check_layout, frame_portraits, grid_shape
from vivify.compose.group import GroupComposer
from vivify.errors import VivifyError
from vivify.io.image import fit_portrait, load_portrait
from vivify.io.video import VideoReader, open_video
from vivify.io.writers import FrameWriter, open_writer, refuse_input_as_output
from vivify.landmarks import topology
from vivify.landmarks.facemesh import FaceTracker, detect_faces, face_size
from vivify.landmarks.spool import LandmarkSpool
from vivify.motion.pose import fit_similarity
from vivify.progress import PICKING, Progress, hears_stages
from vivify.provenance.label import LabelSettings, is_one_line
from vivify.provenance.marks import Marks

DEFAULT_CELL = (256, 256)
# The animators' frames for one driving frame, once they are rendered.
Rendering = Callable[[], list[np.ndarray]]

log = logging.getLogger(__name__)


def best_reference_frames(driving: str | Path, portraits: Sequence[np.ndarray], spool: LandmarkSpool | None = None,
                          progress: Progress | None = None) -> list[tuple[int, np.ndarray, np.ndarray] | None]:
    """For each portrait's landmarks, the driving frame whose pose and expression are closest to the portrait's:
    its index, the frame and its landmarks (None where no frame has a face). One tracking pass serves them all;
    every frame's landmarks go into `spool` if given, and `progress` hears of the frames tracked (stage
    `PICKING`), from this thread, where it takes a stage.

    On two cores or more, the clip's two halves are tracked at once, each by a tracker of its own (the second
    finds the face afresh in its first frame, as a tracker does in a clip's first): nothing else runs yet.
    """
    targets = [portrait[:, :2] for portrait in portraits]
    with open_video(driving) as video:
        count = video.frame_count
    tracked_frames = [0, 0]  # by each half

    heard = progress is not None and hears_stages(progress)

    def report() -> None:
        if heard:
            progress(sum(tracked_frames), count, stage=PICKING)

    def first_half_frame() -> None:
        tracked_frames[0] += 1
        report()

    cancel = threading.Event()  # the second half stops early where the first fails or is interrupted
    if count is None or count < 2 * _HALF_CLIP or len(os.sched_getaffinity(0)) < 2:
        closest = _closest_frames(driving, targets, 0, None, spool, cancel, first_half_frame)
    else:
        middle = count // 2

        def second_half_frame() -> None:
            tracked_frames[1] += 1

        with LandmarkSpool() as later, ThreadPoolExecutor(1, thread_name_prefix="vivify-best") as pool:
            second = pool.submit(_closest_frames, driving, targets, middle, None, later, cancel, second_half_frame)
            try:
                first = _closest_frames(driving, targets, 0, middle, spool, cancel, first_half_frame)
                # Reporting on while the second half finishes, and once more when it has: the whole count.
                while True:
                    finished = not futures.wait([second], timeout=_REPORT_EVERY).not_done
                    report()
                    if finished:
                        break
                rest = second.result()
            except BaseException:
                cancel.set()
                raise
            # The earlier frame where the two are as close, as in one pass.
            closest = [b if a is None or (b is not None and b[0] < a[0]) else a
                       for a, b in zip(first, rest, strict=True)]
            if spool is not None:
                spool.extend(later)
    return [None if found is None else found[1] for found in closest]


# A clip shorter than two of these is tracked in one pass: a second tracker's start (its graph, finding the face
# and settling its landmarks: tens of milliseconds) would take much of what it saves there.
_HALF_CLIP = 50
# Seconds between reports of the pass while its first half waits for its second.
_REPORT_EVERY = 0.5


def _closest_frames(driving: str | Path, targets: Sequence[np.ndarray], start: int, stop: int | None,
                    spool: LandmarkSpool | None, cancel: threading.Event, tracked_one: Callable[[], None],
                    ) -> list[tuple[float, tuple[int, np.ndarray, np.ndarray]] | None]:
    """`best_reference_frames` over frames start..stop of the clip (to its end where stop is None), with each
    choice's distance; every frame's landmarks go into `spool` if given, and `tracked_one` is called after each
    frame. Stops early once `cancel` is set."""
    best: list[tuple[float, tuple[int, np.ndarray, np.ndarray]] | None] = [None] * len(targets)
    # What each frame is compared with, measured once per portrait: its rigid points, eye span and mouth gap.
    measures = [(portrait, portrait[topology.RIGID], topology.inter_ocular(portrait), topology.mouth_gap(portrait))
                for portrait in targets]
    with open_video(driving) as video, FaceTracker() as tracker:
        frames = itertools.islice(video.frames(), start, stop)
        # Decoded and tracked in a second thread while the frames before are compared here.
        for index, (frame, points) in enumerate(tracked(frames, tracker.detect), start=start):
            if cancel.is_set():
                break
            if spool is not None:
                spool.append(points)
            # A frame without a face is compared with none.
            for k, (portrait, rigid, unit, gap) in enumerate(measures if points is not None else ()):
                # Align the driver's face onto the portrait's, then compare shapes in inter-ocular units. The
                # mouth's opening counts once more on its own: the motion evens out a reference more or less
                # open than the portrait's mouth (a smile that shows the teeth), but the closer the two, the less
                # it has to make up.
                to_portrait = fit_similarity(points[topology.RIGID], rigid)
                aligned = to_portrait.apply(points[:, :2])
                distance = (np.mean(np.linalg.norm(aligned - portrait, axis=1)) / unit + abs(to_portrait.angle)
                            + abs(topology.mouth_gap(aligned) - gap) / unit)
                if best[k] is None or distance < best[k][0]:
                    best[k] = (distance, (index, frame, points))
            tracked_one()
    return best


def _frame_at(driving: str | Path, index: int) -> np.ndarray:
    with open_video(driving) as video:
        for position, frame in enumerate(video.frames()):
            if position == index:
                return frame
    raise VivifyError(f"{driving}: --reference {index} is past the last frame")


def first_face(driving: str | Path, track: Callable[[np.ndarray], np.ndarray | None] | None = None,
               spool: LandmarkSpool | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """The first driving frame with a face, its index and its landmarks; a VivifyError naming the file if none
    has one. `track`, where given, finds the landmarks (a tracker's `detect`: the render's own, which then goes
    on from that frame), and `spool`, where given, keeps those of every frame up to it."""
    with contextlib.ExitStack() as stack:
        if track is None:
            track = stack.enter_context(FaceTracker()).detect
        video = stack.enter_context(open_video(driving))
        for index, frame in enumerate(video.frames()):
            points = track(frame)
            if spool is not None:
                spool.append(points)
            if points is not None:
                return index, frame, points
    raise VivifyError(f"{driving}: no face found in any frame")


class Calibrated(Protocol):
    """What the references are set on: an `Animator`, or one in a worker process (`RemoteAnimator`)."""

    points: np.ndarray

    def set_reference(self, frame: np.ndarray | None, landmarks: np.ndarray | None = None) -> None: ...


def _set_references(animators: Sequence[Calibrated], driving: str | Path, reference: str,
                    spool: LandmarkSpool, progress: Progress | None,
                    track: Callable[[np.ndarray], np.ndarray | None]) -> None:
    """Calibrate every animator on the driving frame that `reference` picks, before any frame is rendered.

    Done up front even for "first" (where an Animator would take the first frame it sees with a face): a clip
    without any face fails here, before anything is rendered, and frames before the first face render the
    portrait as it is instead of reaching the engine without a reference. "first" and N are one frame for
    all, found once; "best" is each portrait's own, found in a pass over the whole clip. The landmarks of the
    frames tracked go into `spool`: the whole clip's for "best" (reported to `progress`); for "first", those up
    to the first face, found by the render's own tracker (`track`), which goes on from there.
    """
    name = str(driving)
    if reference == "best":
        picks = best_reference_frames(driving, [a.points for a in animators], spool, progress)
        for animator, found in zip(animators, picks, strict=True):
            if found is None:
                raise VivifyError(f"{name}: no face found in any frame")
            animator.set_reference(found[1], found[2])
        return
    if reference == "first":
        index, frame, points = first_face(driving, track, spool)
    else:
        index = int(reference)
        frame = _frame_at(driving, index)
        with FaceTracker() as tracker:  # measured as the render's tracking will measure that frame
            points = tracker.detect(frame)
        if points is None:
            raise VivifyError(f"{name}: no face found in frame {index} (the --reference frame)")
    for animator in animators:
        animator.set_reference(frame, points)


def animate(portrait_path: str | Path, driving_path: str | Path, output: str | Path, *,
            size: tuple[int, int] | None = None, max_side: int | None = None, reference: str = "first",
            absolute: bool = False, face: int = 0, faces: Sequence[int] | str | None = None,
            overwrite: bool = False, progress: Progress | None = None, marks: Marks | None = None) -> Path:
    """Animate the portrait in `portrait_path` with the motion of `driving_path`; write `output`.

    `face` picks one face of the portrait (largest first); `faces` ("all", or indices) animates several in
    place instead, each with the same motion. The output carries the provenance marks: `marks` when given
    (label wording and position, signing identity, the command for the audit log), else the defaults with
    the portrait and the driving video as ingredients. Returns the output path. Raises VivifyError for
    problems with the inputs or options.
    """
    portrait_name = str(portrait_path)
    _check_reference(reference)
    if not (faces is None or faces == "all" or (not isinstance(faces, str) and all(
            isinstance(index, int) and index >= 0 for index in faces))):
        raise VivifyError(f"faces {faces!r}: expected \"all\" or face numbers from 0, such as [0, 2]")
    refuse_input_as_output(output, portrait_path, driving_path)
    marks = Marks.create(ingredients=(portrait_path, driving_path)) if marks is None \
        else marks.naming_inputs((portrait_path, driving_path))
    portrait = fit_portrait(load_portrait(portrait_path), size, max_side)
    # The writer opens before the (slower) face set-up, so a bad or existing OUT fails at once; leaving the
    # block by an error removes its temporary output and leaves OUT as it was.
    out_size = (portrait.shape[1], portrait.shape[0])
    with open_video(driving_path) as video, open_writer(
            output, video.fps, out_size, audio_source=driving_path if video.has_audio else None,
            overwrite=overwrite, marks=marks, frame_times=video.frame_times()) as writer:
        detected = detect_faces(portrait)  # once, for the choice and for every animator
        chosen = [face] if faces is None else _chosen_faces(detected, portrait_name, faces)
        count = len(chosen)
        if count == 1:
            animator = Animator(portrait, face=chosen[0], absolute=absolute, rate=float(video.fps),
                                name=portrait_name, detected=detected)
            if faces is None and animator.faces_found > 1:
                print(f"vivify: {portrait_name}: {animator.faces_found} faces found, animating face {face} "
                      "(largest first; --face N picks another, --faces all animates every one)", file=sys.stderr)
            _render_here(animator, video, driving_path, reference, writer, progress)
        else:
            # Each face's animator in a worker process (threads would take turns for the interpreter lock), the
            # group composed here.
            with AnimatorProcesses(count) as processes:
                processes.make([portrait] * count, [portrait_name] * count, float(video.fps), [detected] * count,
                               faces=chosen, absolute=absolute, coverage=True)
                composer = GroupComposer(portrait, [a.points for a in processes.animators],
                                         [a.region for a in processes.animators])

                def compose(renders: list[np.ndarray]) -> np.ndarray:
                    return composer.compose(renders, processes.coverages)

                _render_in_processes(processes, video, driving_path, reference, writer, compose, progress)
    return Path(output)


def _check_reference(reference: str) -> None:
    if not (reference in ("first", "best") or (isinstance(reference, str) and reference.isdigit())):
        raise VivifyError(f"reference {reference!r}: expected \"first\", \"best\" or a frame number such as \"12\"")


def _chosen_faces(detected: list[np.ndarray], name: str, faces: Sequence[int] | str) -> list[int]:
    found = len(detected)
    if found == 0:
        raise VivifyError(f"no face found in {name}")
    if faces == "all":
        # Every face large enough to animate (largest first: a prefix); with none, the largest, which the
        # animator refuses with the minimum named.
        return [index for index, points in enumerate(detected) if face_size(points) >= MIN_FACE_PIXELS] or [0]
    chosen = sorted(set(faces))
    missing = [index for index in chosen if index >= found]
    if missing:
        raise VivifyError(f"{name}: face {missing[0]} requested but only {found} found (faces count from 0)")
    return chosen


def _render_all(animators: Sequence[Calibrated], start: Callable[[np.ndarray, np.ndarray | None], Rendering],
                track: Callable[[np.ndarray], np.ndarray | None], video: VideoReader, driving_path: str | Path,
                reference: str, writer: FrameWriter, compose: Callable[[list[np.ndarray]], np.ndarray] | None,
                progress: Progress | None) -> None:
    """Drive every animator with the same frames: calibrate them, track the driving face once (`track`), render
    them all, compose, write. `start` begins rendering a frame and returns what finishes it (the animators'
    frames): the next frame is started before this one is composed and written, so where the rendering runs
    elsewhere (worker processes), it goes on meanwhile."""
    face_seen = False
    finish: Rendering | None = None
    started_count = 0
    with LandmarkSpool() as spool:
        _set_references(animators, driving_path, reference, spool, progress, track)
        # The frames tracked to find the references are read back, not tracked again: the landmarks the
        # references were picked on, at no cost.
        for frame, points in tracked(video.frames(), spool.replay(then=track)):
            face_seen = face_seen or points is not None
            started = start(frame, points)
            if finish is not None:
                _write(finish, compose, writer, progress, started_count, video.frame_count)
            finish, started_count = started, started_count + 1
    if finish is not None:
        _write(finish, compose, writer, progress, started_count, video.frame_count)
    if not face_seen:
        raise VivifyError(f"{driving_path}: no face found in any frame")


def _write(finish: Rendering, compose: Callable[[list[np.ndarray]], np.ndarray] | None, writer: FrameWriter,
           progress: Progress | None, done: int, total: int) -> None:
    """Write the frame that `finish` gives (composed, where there are several), the `done`th of `total`."""
    renders = finish()
    writer.write(renders[0] if compose is None else compose(renders))
    if progress is not None:
        progress(done, total)


def _render_here(animator: Animator, video: VideoReader, driving_path: str | Path, reference: str,
                 writer: FrameWriter, progress: Progress | None,
                 compose: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> None:
    """`_render_all` with one animator in this process, closed after."""

    def start(frame: np.ndarray, points: np.ndarray | None) -> Rendering:
        rendered = [animator.render(frame, points)]
        return lambda: rendered

    try:
        _render_all([animator], start, animator.track, video, driving_path, reference, writer, compose, progress)
    finally:
        animator.close()


def _render_in_processes(processes: AnimatorProcesses, video: VideoReader, driving_path: str | Path,
                         reference: str, writer: FrameWriter, compose: Callable[[list[np.ndarray]], np.ndarray],
                         progress: Progress | None) -> None:
    """`_render_all` with the animators in worker processes; the driving face is tracked here."""

    def start(frame: np.ndarray, points: np.ndarray | None) -> Rendering:
        processes.submit(frame, points)
        return processes.collect  # the workers answer in order: this frame's, when called next

    # Made at the first frame tracked: where `best`'s pass has tracked the clip, its landmarks are read back and
    # none is (a tracking graph takes 15 ms to make and 30 ms to close).
    tracker: FaceTracker | None = None

    def track(frame: np.ndarray) -> np.ndarray | None:
        nonlocal tracker
        tracker = tracker or FaceTracker()
        return tracker.detect(frame)

    try:
        _render_all(processes.animators, start, track, video, driving_path, reference, writer, compose, progress)
    finally:
        if tracker is not None:
            tracker.close()


_END = object()


def tracked(frames: Iterator[np.ndarray], track: Callable[[np.ndarray], np.ndarray | None],
            depth: int = 3) -> Iterator[tuple]:
    """(frame, driving landmarks) pairs, decoded and tracked a few frames ahead in a second thread.

    MediaPipe and PyAV release the GIL, so landmarks of the next frames are found while this one renders:
    the two stages then share the two cores instead of taking turns.
    """
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        """Queue `item` for the consumer, unless it has stopped (an error, Ctrl-C): then it never takes one
        again, and a plain `put` into a full queue would wait for ever. Whether it was queued."""
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for frame in frames:
                if not hand_over((frame, track(frame))):
                    return
            hand_over(_END)
        except BaseException as error:  # handed to the consumer, which raises it
            hand_over(error)

    worker = threading.Thread(target=produce, name="vivify-track", daemon=True)
    worker.start()
    try:
        while (item := ahead.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def sing(driving_path: str | Path, portrait_paths: Sequence[str | Path], output: str | Path, *,
         grid: tuple[int, int] | None = None, cell_size: tuple[int, int] = DEFAULT_CELL,
         captions: Sequence[str] = (), reference: str = "best", overwrite: bool = False,
         progress: Progress | None = None, marks: Marks | None = None) -> Path:
    """Animate every portrait with the same driving video, in step, laid out in a grid; write `output`.

    `grid` is (rows, columns), automatic by default (`vivify.compose.grid.grid_shape`); `cell_size` (W, H) is
    each portrait's framed cell; `captions` go under the faces, one per portrait. `reference` is "best" by
    default: each portrait is calibrated on the driving frame closest to its own pose and expression, mouth
    opening above all (a portrait that shows its teeth, calibrated on a driver's shut mouth, would keep them
    showing where the driver's mouth shuts). The driving video is decoded and its landmarks found once for all
    cells, and the cells are rendered on all cores. The output has the driving video's frame count, frame rate
    and audio, and carries the provenance marks (`marks`, else the defaults with the label top right and every
    portrait and the driving video as ingredients).
    """
    count = len(portrait_paths)
    automatic = grid_shape(count)  # also refuses a count the grid cannot hold
    rows, cols = grid or automatic
    if rows * cols < count:
        raise VivifyError(f"a {rows}x{cols} grid has {rows * cols} cells for {count} portraits")
    if (rows - 1) * cols >= count or rows * (cols - 1) >= count:  # a whole row or column would stay empty
        raise VivifyError(f"a {rows}x{cols} grid leaves a whole row or column empty for {count} portraits "
                          f"(the automatic grid for {count} is {automatic[0]}x{automatic[1]})")
    if captions and len(captions) != count:
        given = f"{len(captions)} caption{'' if len(captions) == 1 else 's'}"
        raise VivifyError(f"{given} for {count} portraits (give one per portrait)")
    for number, caption in enumerate(captions, start=1):
        if not is_one_line(caption):
            raise VivifyError(f"caption {number} holds a line break or another control character: captions are "
                              "one line of text")
    cell = (cell_size[0] - cell_size[0] % 2, cell_size[1] - cell_size[1] % 2)
    check_layout(rows, cols, cell)
    _check_reference(reference)
    refuse_input_as_output(output, driving_path, *portrait_paths)
    # Several cells render in worker processes, started first: they start Python while the portraits are framed.
    with AnimatorProcesses(count) if count > 1 else contextlib.nullcontext() as processes:
        _sing(driving_path, portrait_paths, output, Grid(rows, cols, cell, tuple(captions)), reference, overwrite,
              progress, marks, processes)
    return Path(output)


def _sing(driving_path: str | Path, portrait_paths: Sequence[str | Path], output: str | Path, layout: Grid,
          reference: str, overwrite: bool, progress: Progress | None, marks: Marks | None,
          processes: AnimatorProcesses | None) -> None:
    """`sing` once its options are checked, with the worker processes for its cells (None for one portrait)."""
    # Every portrait is read and framed before anything is written: a photo without a face stops here.
    cells = frame_portraits(portrait_paths, layout.cell)
    if marks is None:
        # Top right, as `vivify sing` puts it: over the hair of one cell, not over a chin and a caption.
        marks = Marks.create(label=LabelSettings(position="top-right"), ingredients=(*portrait_paths, driving_path))
    else:
        marks.naming_inputs((*portrait_paths, driving_path))
    label = marks.label
    if layout.captions and label.enabled and label.position.startswith("bottom"):
        log.warning("the visible label at the %s covers the caption of the cell there (top-left or top-right "
                    "keeps it clear of captions)", label.position.replace("-", " "))
    names = [str(path) for path in portrait_paths]
    with open_video(driving_path) as video, open_writer(
            output, video.fps, layout.size, audio_source=driving_path if video.has_audio else None,
            overwrite=overwrite, marks=marks, frame_times=video.frame_times()) as writer:
        if processes is None:
            _render_here(Animator(cells[0], rate=float(video.fps), name=names[0]), video, driving_path, reference,
                         writer, progress, layout.compose)
        else:
            # The cells render in the worker processes, which find their faces themselves; the driving face is
            # tracked here.
            processes.make(cells, names, float(video.fps))
            _render_in_processes(processes, video, driving_path, reference, writer, layout.compose, progress)
