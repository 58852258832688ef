"""`vivify eval sync`: do the cells of a grid open their mouths with the driving face?

For each frame the mouth opening is measured with dlib's 68-point landmarks (independent of the engine's
MediaPipe): the mean gap between the inner lips (points 61–63 against 67–65) over the distance between the
outer eye corners (36, 45). Each cell's curve is compared with the driving video's by Pearson's r at lags of
−1, 0 and +1 frames; the best r and its lag are reported (target: r ≥ 0.8 at |lag| ≤ 1 in every cell).

Faces are detected every `REDETECT` frames and the box is reused in between (dlib's HOG detector is the slow
part; the landmark fit tolerates a box a few pixels off). A face that has moved by more than `_LEFT_ITS_BOX` of
its box since (its points in the frame before, against those fitted on the box's own frame) is detected again at
once: a head coming down by a sixth of its box in four frames, fitted on the box of the first, read a shut mouth
as wide open (0.17 eye spans against 0.004 on its own box). The landmark fit always returns points, so a box
must not outlive its face: where a detection finds none, that frame is not measured, the face is searched for
on every frame until it is found again, and the frames measured on the old box since it was detected are
searched too (only then: detections fail rarely on real faces), each left unmeasured where it has no face. A
face dlib misses in one frame costs that frame only. Each frame's points are the mean of 9 fits from boxes a little
apart: a single fit moves with where its box sits, and two identical cells of a grid then read different curves
(r 0.93 between them on the d6 grid, 0.98 with the mean; docs/BENCHMARKS.md).

`measure="mediapipe"` reads the same curves with MediaPipe's Face Mesh instead, tracked from frame to frame: the
engine's own detector, so not the target's measure, but a cross-check of where a low r comes from. Where
MediaPipe reads a cell in step and dlib does not, the cell shows the opening and dlib misreads it; where both
read it out of step, the picture hides it (a moustache over the upper lip).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vivify.errors import VivifyError
from vivify.eval.figures import command_line, figure, machine
from vivify.eval.metrics import Box, DlibFaceMeasure, eye_span
from vivify.io.reports import write_json
from vivify.io.video import open_video
from vivify.landmarks import topology
from vivify.landmarks.facemesh import FaceTracker

REDETECT = 5
# A face moved this far (a share of its box's height) from where its box was detected is detected again.
_LEFT_ITS_BOX = 0.04
_MIN_SIDE = 400  # px: smaller cells are upscaled before measuring
TARGET_R = 0.8
LAGS = (-1, 0, 1)
_INNER_TOP, _INNER_BOTTOM = (61, 62, 63), (67, 66, 65)
# Face Mesh's inner-lip points that match dlib's three pairs: upper 82, 13, 312 against lower 87, 14, 317.
_MESH_INNER_TOP, _MESH_INNER_BOTTOM = (82, 13, 312), (87, 14, 317)


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap over the outer eye corners' distance, from dlib's 68 landmarks."""
    return _inner_lip_gap(landmarks, _INNER_TOP, _INNER_BOTTOM) / eye_span(landmarks)


def mesh_mouth_opening(points: np.ndarray) -> float:
    """`mouth_opening` from MediaPipe's 478 landmarks: the same three inner-lip pairs over the same eye corners."""
    return _inner_lip_gap(points, _MESH_INNER_TOP, _MESH_INNER_BOTTOM) / topology.inter_ocular(points)


def _inner_lip_gap(points: np.ndarray, top: tuple[int, ...], bottom: tuple[int, ...]) -> float:
    return float(np.linalg.norm(points[list(top), :2] - points[list(bottom), :2], axis=1).mean())


class MeshTrack:
    """One face's opening curve read by MediaPipe's Face Mesh, tracked across the frames (NaN where it finds no
    face). Close it when done (it holds a MediaPipe graph)."""

    def __init__(self) -> None:
        self._tracker = FaceTracker()
        self.curve: list[float] = []

    def add(self, image: np.ndarray) -> None:
        points = self._tracker.detect(np.ascontiguousarray(image))
        self.curve.append(np.nan if points is None else mesh_mouth_opening(points))

    def close(self) -> None:
        self._tracker.close()


class Track:
    """One face's opening curve, re-detecting its box every REDETECT frames and once the face has moved off it
    (`_LEFT_ITS_BOX`); frames without a face are not measured (NaN, no points; see the module's description).
    `steady`: each frame's points are the average of fits from 9 boxes around the detected one
    (`DlibFaceMeasure.steady_landmarks_at`)."""

    def __init__(self, measure: DlibFaceMeasure, steady: bool = False) -> None:
        self._measure = measure
        self._fit = measure.steady_landmarks_at if steady else measure.landmarks_at
        self._box: Box | None = None
        self._anchor: np.ndarray | None = None  # the centre of the points fitted on the box's own frame
        # (index, image) of the frames measured on the box since it was detected, searched if its face is lost.
        self._on_old_box: list[tuple[int, np.ndarray]] = []
        self.curve: list[float] = []
        self.points: list[np.ndarray | None] = []  # dlib's 68 points, in the measured image's pixels

    def add(self, image: np.ndarray) -> None:
        if image.shape[0] < _MIN_SIDE:  # dlib's 68 points are coarse on small faces: measure at twice the size
            image = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
        if self._box is None or len(self._on_old_box) == REDETECT - 1 or self._face_left_its_box():
            boxes = self._measure.detect(image)
            self._box = boxes[0] if boxes else None
            if self._box is None:
                self._forget_faceless(self._on_old_box)
            self._on_old_box = []
            self._anchor = None
        else:
            self._on_old_box.append((len(self.curve), image))
        points = None if self._box is None else self._fit(image, self._box)
        if self._anchor is None and points is not None:
            self._anchor = points.mean(axis=0)
        self.points.append(points)
        self.curve.append(np.nan if points is None else mouth_opening(points))

    def _face_left_its_box(self) -> bool:
        last = self.points[-1] if self.points else None
        if self._box is None or self._anchor is None or last is None:
            return False
        return float(np.linalg.norm(last.mean(axis=0) - self._anchor)) > _LEFT_ITS_BOX * self._box.height

    def _forget_faceless(self, frames: list[tuple[int, np.ndarray]]) -> None:
        for index, image in frames:
            if not self._measure.detect(image):
                self.curve[index], self.points[index] = np.nan, None


def best_correlation(cell: Sequence[float], driving: Sequence[float],
                     lags: Sequence[int] = LAGS) -> tuple[float, int | None]:
    """(r, lag) maximising Pearson's r of `cell` against `driving` shifted by `lag` frames (a positive lag:
    `cell` follows `driving` that many frames later; frames where either curve has no face are left out).
    (NaN, None) where no lag leaves 3 frames with both curves measured and moving: neither was measured."""
    best: tuple[float, int | None] = (math.nan, None)
    a_all, b_all = np.asarray(cell, float), np.asarray(driving, float)
    for lag in lags:
        a = a_all[max(0, lag):len(a_all) + min(0, lag)]
        b = b_all[max(0, -lag):len(b_all) + min(0, -lag)]
        valid = np.isfinite(a) & np.isfinite(b)
        if valid.sum() < 3 or np.std(a[valid]) == 0 or np.std(b[valid]) == 0:
            continue
        r = float(np.corrcoef(a[valid], b[valid])[0, 1])
        if not r <= best[0]:  # also replaces NaN, the start
            best = (r, lag)
    return best


def evaluate_sync(grid_video: Path, driving: Path, rows: int, cols: int, count: int,
                  frames: int | None = None, measure: str = "dlib") -> dict[str, Any]:
    """Opening curves of the driving face and of the first `count` cells, and each cell's best r and lag, read by
    `measure` ("dlib" or "mediapipe"). The target is judged on dlib's reading only (`target_met` is None otherwise)."""
    if count > rows * cols:
        raise VivifyError(f"--count {count}: a {rows}x{cols} grid has only {rows * cols} cells")
    with contextlib.ExitStack() as stack:
        if measure == "dlib":
            dlib_measure = DlibFaceMeasure(upsample=1)
            tracks: list[Track | MeshTrack] = [Track(dlib_measure, steady=True) for _ in range(count + 1)]
        else:
            tracks = [stack.enter_context(contextlib.closing(MeshTrack())) for _ in range(count + 1)]
        driving_track, *cells = tracks
        _read_curves(grid_video, driving, rows, cols, frames, driving_track, cells)
    results = []
    for number, track in enumerate(cells):
        r, lag = best_correlation(track.curve, driving_track.curve)
        results.append({"cell": number, "r": r, "lag": lag, "frames_with_face": int(np.isfinite(track.curve).sum())})
    # A cell where no r could be measured (no face found, or a mouth that never moved) is the lowest.
    return {"video": str(grid_video), "driving": str(driving), "grid": [rows, cols], "measure": measure,
            "frames": len(driving_track.curve), "cells": results,
            "min_r": min((c["r"] for c in results), key=lambda r: -math.inf if math.isnan(r) else r),
            "target_met": all(c["lag"] is not None and c["r"] >= TARGET_R and abs(c["lag"]) <= 1 for c in results)
            if measure == "dlib" else None,
            "machine": machine(), "command": command_line()}


def _read_curves(grid_video: Path, driving: Path, rows: int, cols: int, frames: int | None,
                 driving_track: Track | MeshTrack, cells: Sequence[Track | MeshTrack]) -> None:
    """Add each frame of the driving video to `driving_track`, and each cell of the grid's frame to its track."""
    with open_video(grid_video) as grid, open_video(driving) as source:
        if grid.width % cols or grid.height % rows:
            raise VivifyError(f"{grid_video.name}: {grid.width}x{grid.height} does not split into {rows}x{cols} cells")
        cell_w, cell_h = grid.width // cols, grid.height // rows
        for index, (frame, drive) in enumerate(zip(grid.frames(), source.frames(), strict=False)):
            if frames is not None and index >= frames:
                break
            driving_track.add(drive)
            for number, track in enumerate(cells):
                row, col = divmod(number, cols)
                track.add(frame[row * cell_h:(row + 1) * cell_h, col * cell_w:(col + 1) * cell_w])


def run(grid_video: Path, driving: Path, grid: tuple[int, int], count: int | None, frames: int | None,
        json_path: Path | None, measure: str = "dlib") -> int:
    rows, cols = grid
    report = evaluate_sync(grid_video, driving, rows, cols, count or rows * cols, frames, measure)
    reading = ("dlib 68-point mouth opening (mean of 9 fits)" if measure == "dlib" else
               "MediaPipe Face Mesh mouth opening (the engine's own detector: a cross-check, not the target's measure)")
    print(f"sync of {grid_video.name} ({rows}x{cols}) with {driving.name}, {report['frames']} frames; "
          f"{reading}, Pearson r at lag -1..+1 (target r ≥ {TARGET_R}, measured with dlib)")
    print(f"{'cell':>4} {'r':>6} {'lag':>4} {'faces':>6}")
    for cell in report["cells"]:
        print(f"{cell['cell']:>4} {figure(cell['r']):>6} {figure(cell['lag'], '+d'):>4} {cell['frames_with_face']:>6}")
    if report["target_met"] is None:
        print(f"lowest r {figure(report['min_r'])} (the target is judged with dlib's reading)")
    else:
        print(f"lowest r {figure(report['min_r'])}: target {'met' if report['target_met'] else 'NOT met'}"
              + ("" if all(math.isfinite(c["r"]) for c in report["cells"]) else " (n/a: no r could be measured)"))
    print(f"machine: {report['machine']}; command: {report['command']}")
    if json_path is not None:
        write_json(json_path, report)
    return 0
