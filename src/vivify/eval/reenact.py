"""`vivify eval reenact`: self-reenactment, as in the First Order Motion Model paper.

Each clip animates its own first frame with its own frames as the driving video, so the real frames are the
ground truth: L1 (pixels), AKD (landmark distance, px) and AED (identity distance) are measured on every
frame after frame 0 (frame 0 is the portrait itself: scoring it would only pull the figures towards 0). The
static baseline (frame 0 repeated) is measured alongside; an engine should beat it on AKD and L1 while keeping
AED close to it.
"""

from __future__ import annotations

import functools
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from vivify.animator import Animator
from vivify.errors import VivifyError
from vivify.eval.figures import command_line, figure, machine, measured_mean
from vivify.eval.metrics import Box, DlibFaceMeasure, l1
from vivify.io.reports import write_json
from vivify.io.video import open_video

METHODS = ("vivify", "static")

# Side of the crop square as a multiple of dlib's face box height. dlib's box runs from the brows to the
# chin, so 2.5x leaves room for hair, ears and some head motion, as in the FOMM/VoxCeleb crops.
CROP_SCALE = 2.5
# HOG detection on a 1080x1920 frame upsampled twice is slow; frame 0 is searched at this size at most.
_DETECT_MAX_SIDE = 1024


class Crop(NamedTuple):
    """A square region of the source frame: top-left corner and side, in source pixels."""

    x: int
    y: int
    side: int


def crop_square(
    frame_width: int, frame_height: int, face: Box, scale: float = CROP_SCALE, min_side: int = 0
) -> Crop:
    """A square of side scale * face height around the face, clipped to the frame.

    For face-crop clips (VoxCeleb, HDTF: 256x256, 512x512) the square exceeds the frame, so the whole frame
    (its largest square) is used; for full-frame video with a small face it is a zoom on the head.
    min_side (the output size): zooming in further would only upsample, blurring the frames and inflating
    AKD's pixels, so the square is never made smaller than that.
    """
    side = min(max(round(scale * face.height), min_side), frame_width, frame_height)
    cx = (face.left + face.right) / 2.0
    # The box starts at the brows; the head's centre is a little above the box centre.
    cy = (face.top + face.bottom) / 2.0 - 0.1 * face.height
    # Shift (rather than shrink) the square to keep it inside the frame, so the crop stays square.
    x = round(min(max(cx - side / 2.0, 0.0), frame_width - side))
    y = round(min(max(cy - side / 2.0, 0.0), frame_height - side))
    return Crop(x, y, side)


def find_crop(
    frame: np.ndarray, measure: DlibFaceMeasure, scale: float = CROP_SCALE, min_side: int = 0
) -> Crop | None:
    """The crop square around the largest face of a full-resolution frame; None when there is no face."""
    height, width = frame.shape[:2]
    factor = min(1.0, _DETECT_MAX_SIDE / max(height, width))
    small = frame
    if factor < 1.0:
        small = cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    boxes = measure.detect(small, upsample=1)
    if not boxes:
        return None
    b = boxes[0]
    face = Box(*(round(v / factor) for v in (b.left, b.top, b.right, b.bottom)))
    return crop_square(width, height, face, scale, min_side)


def apply_crop(frame: np.ndarray, crop: Crop, size: int) -> np.ndarray:
    region = frame[crop.y : crop.y + crop.side, crop.x : crop.x + crop.side]
    # INTER_AREA when shrinking (anti-aliased, as the FOMM preprocessing); cubic when enlarging.
    interp = cv2.INTER_AREA if crop.side >= size else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(region, (size, size), interpolation=interp))


@functools.cache
def _face_measure(upsample: int) -> DlibFaceMeasure:
    # Loading the three dlib models takes about a second: do it once per process.
    return DlibFaceMeasure(upsample=upsample)


class VideoFrames:
    """The first `count` frames of a video as upright RGB uint8 arrays, read by the engine's own reader (which
    refuses what is not a video, such as a still image, with the reason)."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.count = count
        self._video = open_video(path)
        self.rate = float(self._video.fps)

    def close(self) -> None:
        self._video.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            yield from itertools.islice(self._video.frames(), self.count)
        finally:
            self._video.close()


def portrait_crop(path: Path, measure: DlibFaceMeasure, size: int) -> Crop:
    """The crop around the face of the clip's frame 0, the portrait its other frames drive. Raises VivifyError
    naming the clip where it is no video, has no face in frame 0, or has no frame after it to measure; cheap
    (two frames decoded, one face search), so every clip is checked before minutes go on the first."""
    video = VideoFrames(path, 2)
    first, *driven = video
    if not driven:
        raise VivifyError(f"{path}: has only one frame: nothing drives its frame 0 (the portrait)")
    crop = find_crop(first, measure, min_side=size)
    if crop is None:
        raise VivifyError(f"{path}: no face found in frame 0")
    return crop


@dataclass
class MethodScores:
    """Per-clip means over frames (AKD/AED over frames where the real face was detected)."""

    l1: float
    akd: float
    aed: float
    fallback: int  # frames whose generated face was not detected (the real frame's box was used)


@dataclass
class ClipResult:
    video: str
    frames: int
    source_size: tuple[int, int]  # width, height
    crop: Crop
    no_face: int  # real frames where dlib found no face (AKD/AED skipped there)
    setup_s: float  # Animator construction
    render_s_per_frame: float
    metrics_s_per_frame: float
    total_s: float
    methods: dict[str, MethodScores] = field(default_factory=dict)


class _Accumulator:
    def __init__(self) -> None:
        self.l1: list[float] = []
        self.akd: list[float] = []
        self.aed: list[float] = []
        self.fallback = 0

    def result(self) -> MethodScores:
        return MethodScores(
            l1=measured_mean(self.l1), akd=measured_mean(self.akd), aed=measured_mean(self.aed), fallback=self.fallback
        )


def evaluate_clip(
    path: Path,
    crop: Crop,
    measure: DlibFaceMeasure,
    frames: int = 100,
    size: int = 256,
    animator_options: dict[str, Any] | None = None,
) -> ClipResult:
    """Frame 0 of the clip (cut by `crop`, from `portrait_crop`) animated by the clip's first `frames` frames;
    frames 1 on are scored (frame 0 is the portrait itself, no measurement)."""
    start = time.perf_counter()
    video = VideoFrames(path, frames)
    source = iter(video)
    first = next(source)
    portrait = apply_crop(first, crop, size)

    t = time.perf_counter()
    # The engine's filters are timed by the frame rate; its errors should name the clip.
    options = {"rate": video.rate, "name": f"frame 0 of {path}", **(animator_options or {})}
    animator = Animator(portrait, **options)
    setup_s = time.perf_counter() - t

    acc = {m: _Accumulator() for m in METHODS}
    render_s = metrics_s = 0.0
    no_face = count = 0

    try:
        # The portrait drives the engine first, as a clip's frame 0 would: its reference pose and expression.
        animator.render(portrait)
        for image in source:
            real = apply_crop(image, crop, size)
            t = time.perf_counter()
            generated = animator.render(real)
            render_s += time.perf_counter() - t
            if generated.shape != real.shape or generated.dtype != np.uint8:
                raise ValueError(
                    f"Animator.render returned {generated.dtype} {generated.shape}, expected uint8 {real.shape}"
                )
            count += 1

            t = time.perf_counter()
            acc["vivify"].l1.append(l1(generated, real))
            acc["static"].l1.append(l1(portrait, real))
            real_face = measure.face(real)
            if real_face is None:
                no_face += 1
            else:
                vivify_score = measure.compare_to(generated, real_face)
                # The static frame never changes: the measure's content cache makes this nearly free.
                static_score = measure.compare_to(portrait, real_face)
                for method, score in (("vivify", vivify_score), ("static", static_score)):
                    acc[method].akd.append(score.akd)
                    acc[method].aed.append(score.aed)
                    acc[method].fallback += score.fallback
            metrics_s += time.perf_counter() - t
    finally:
        animator.close()  # its tracker and helper thread

    height, width = first.shape[:2]
    return ClipResult(
        video=str(path),
        frames=count,
        source_size=(width, height),
        crop=crop,
        no_face=no_face,
        setup_s=setup_s,
        render_s_per_frame=render_s / count,
        metrics_s_per_frame=metrics_s / count,
        total_s=time.perf_counter() - start,
        methods={m: acc[m].result() for m in METHODS},
    )


def overall(results: list[ClipResult]) -> dict[str, MethodScores]:
    """Mean over clips of the per-clip means (each clip weighs the same, as in FOMM's tables)."""
    out: dict[str, MethodScores] = {}
    for m in METHODS:
        scores = [r.methods[m] for r in results]
        out[m] = MethodScores(
            l1=measured_mean([s.l1 for s in scores]),
            akd=measured_mean([s.akd for s in scores]),
            aed=measured_mean([s.aed for s in scores]),
            fallback=sum(s.fallback for s in scores),
        )
    return out


def format_table(results: list[ClipResult], frames: int, size: int) -> str:
    header = (
        f"{'clip':<28} {'method':<7} {'frames':>6} {'no face':>7} {'L1':>7} {'AKD':>7} {'AED':>7} "
        f"{'gen fallback':>12}"
    )
    lines = [
        f"Self-reenactment (FOMM protocol): first {frames} frames of each clip, {size}x{size} crop, "
        "frame 0 animated by the clip itself and frames 1 on scored",
        "L1: mean |generated - real| in [0,1]; AKD: dlib 68-landmark distance, px; AED: dlib face descriptor "
        "distance; lower is better",
        "",
        header,
        "-" * len(header),
    ]

    def row(name: str, method: str, n: int, no_face: int, s: MethodScores) -> str:
        return (
            f"{name:<28} {method:<7} {n:>6} {no_face:>7} {figure(s.l1, '.4f'):>7} {figure(s.akd, '.2f'):>7} "
            f"{figure(s.aed, '.3f'):>7} {s.fallback:>12}"
        )

    for r in results:
        for m in METHODS:
            lines.append(row(Path(r.video).name[:28], m, r.frames, r.no_face, r.methods[m]))
    total_frames = sum(r.frames for r in results)
    total_no_face = sum(r.no_face for r in results)
    lines.append("-" * len(header))
    for m, s in overall(results).items():
        lines.append(row(f"overall ({len(results)} clips)", m, total_frames, total_no_face, s))
    lines += [
        "",
        f"frames without a detected face in the real frame: {total_no_face} of {total_frames} "
        "(AKD/AED skipped there)",
        "timing per clip: "
        + "; ".join(
            f"{Path(r.video).name} {r.total_s:.1f} s (render {r.render_s_per_frame * 1000:.1f} ms/frame, "
            f"metrics {r.metrics_s_per_frame * 1000:.0f} ms/frame)"
            for r in results
        ),
        f"machine: {machine()}",
        f"command: {command_line()}",
    ]
    return "\n".join(lines)


def run(
    videos: list[Path],
    frames: int = 100,
    size: int = 256,
    json_path: Path | None = None,
    animator_options: dict[str, Any] | None = None,
) -> int:
    """Evaluate every video, print the table to stdout and optionally write the figures as JSON.

    Returns the exit code (0). Raises VivifyError, before measuring any, for an unreadable
    video, one with no face in frame 0 or one with only one frame.
    """
    if not videos:
        raise VivifyError("no videos given")
    if frames < 2 or size < 16:
        raise VivifyError(f"need frames >= 2 (frame 0 is the portrait) and size >= 16 (got frames={frames}, "
                          f"size={size})")
    # Fail on a bad path before loading models, and on a clip with no face to animate before spending minutes
    # on the clips before it.
    for video in videos:
        VideoFrames(Path(video), 1).close()
    # One doubling finds faces down to ~40 px, enough at 256; at 512 and up faces are large anyway.
    measure = _face_measure(1 if size < 512 else 0)
    crops = [portrait_crop(Path(video), measure, size) for video in videos]
    results: list[ClipResult] = []
    for i, (video, crop) in enumerate(zip(videos, crops, strict=True), 1):
        print(f"[{i}/{len(videos)}] {video} ...", file=sys.stderr, flush=True)
        r = evaluate_clip(Path(video), crop, measure, frames=frames, size=size, animator_options=animator_options)
        results.append(r)
        s = r.methods["vivify"]
        print(
            f"[{i}/{len(videos)}] {Path(video).name}: {r.frames} frames of "
            f"{r.source_size[0]}x{r.source_size[1]}, crop x={r.crop.x} y={r.crop.y} side={r.crop.side}; "
            f"vivify L1 {figure(s.l1, '.4f')} AKD {figure(s.akd, '.2f')} AED {figure(s.aed, '.3f')}; "
            f"{r.total_s:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    print(format_table(results, frames, size))
    if json_path is not None:
        payload = {
            "protocol": "self-reenactment (FOMM)",
            "frames": frames,
            "size": size,
            "clips": [asdict(r) | {"crop": r.crop._asdict()} for r in results],
            "overall": {m: asdict(s) for m, s in overall(results).items()},
            "no_face_frames": sum(r.no_face for r in results),
            "machine": machine(),
            "command": command_line(),
        }
        write_json(json_path, payload)
    return 0
