"""A grid of animated portraits: the layout, each portrait framed around its face, captions, the canvas.

Every cell shows its portrait framed the same way whatever the photo's size and aspect ratio: scaled so the
face (forehead to chin) fills one share of the cell's height in every cell, centred on the face, a little above
the middle so hair and shoulders show. The share is `FACE_SHARE`, or more where a photo is cropped closer around
its face: the grid then zooms in on all the others alike rather than pad that photo, for the window never leaves
a photo (what lies beyond its edges would have to be invented).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vivify.animator import MIN_FACE_PIXELS, check_face_size
from vivify.errors import VivifyError
from vivify.io.image import MAX_PORTRAIT_MEGAPIXELS, load_portrait, over_pixel_limit
from vivify.landmarks.facemesh import detect_faces
from vivify.provenance.label import Overlay, font_for, missing_glyphs, text_overlay

log = logging.getLogger(__name__)

MAX_PORTRAITS = 16
FACE_SHARE = 0.42  # face height / cell height
# The most a grid zooms in to show every face alike, where a photo is cropped close around its face.
MAX_FACE_SHARE = 0.7
FACE_CENTRE = 0.46  # where the face's centre sits, from the top, in cell heights
_TARGET_ASPECT = 16 / 9  # the automatic layout aims at a widescreen video
_EMPTY_CELL_COST = 0.5  # in units of |log aspect ratio| difference
_BACKGROUND = 24  # grey level of cells without a portrait
CAPTION_HEIGHT = 0.07  # caption glyphs, in cell heights


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) for `count` portraits: no more rows than columns, few empty cells, and close to 16:9
    for square cells (8 → 2×4, 4 → 2×2, 5 → 2×3, 9 → 3×3, 16 → 4×4)."""
    if not 1 <= count <= MAX_PORTRAITS:
        raise VivifyError(f"a grid holds 1 to {MAX_PORTRAITS} portraits, not {count}")
    best: tuple[float, int, int] | None = None
    for rows in range(1, count + 1):
        cols = math.ceil(count / rows)
        if cols < rows:
            break
        cost = _EMPTY_CELL_COST * (rows * cols - count) + abs(math.log(cols / rows / _TARGET_ASPECT))
        if best is None or cost < best[0]:
            best = (cost, rows, cols)
    assert best is not None
    return best[1], best[2]


def check_layout(rows: int, cols: int, cell: tuple[int, int]) -> None:
    """Refuse cells too low for a face of the engine's minimum size at `FACE_SHARE`, and a canvas over the
    megapixel limit of portraits."""
    cell_w, cell_h = cell
    lowest = math.ceil(MIN_FACE_PIXELS / FACE_SHARE)
    lowest += lowest % 2  # cells are rounded down to even sides
    if cell_h < lowest:
        raise VivifyError(f"cells {cell_w}x{cell_h} frame faces {math.floor(FACE_SHARE * cell_h)} px tall, under "
                          f"the minimum of {MIN_FACE_PIXELS} px: make cells at least {lowest} px high")
    if over_pixel_limit(cols * cell_w, rows * cell_h):
        raise VivifyError(f"a {rows}x{cols} grid of {cell_w}x{cell_h} cells is {cols * cell_w}x{rows * cell_h}, "
                          f"over the {MAX_PORTRAIT_MEGAPIXELS} megapixel limit")


def frame_portraits(paths: Sequence[str | Path], size: tuple[int, int]) -> list[np.ndarray]:
    """Each photo cropped and scaled to `size` (W, H) around its largest face, all with one face share:
    FACE_SHARE, or more where a photo is cropped closer around its face than that allows. The closest crop sets
    it, up to MAX_FACE_SHARE; a photo closer still shows its face larger than the others (said on stderr).
    Raises VivifyError where a photo has no face, or one too small to animate (`check_face_size`): the first
    such photo in order. Each photo is read twice (to find the share, then to frame it), so that few are held at
    once (one for each core while their faces are found): up to 16 of up to 50 megapixels each."""

    def found_in(path: str | Path) -> tuple[list[np.ndarray], tuple[int, int]]:
        image = load_portrait(path)
        return detect_faces(image), image.shape[:2]

    faces, needed = [], []
    # The faces are found on two cores at once (MediaPipe's graph releases Python's interpreter lock), and
    # checked here in the photos' order; the first photo refused stops the rest.
    pool = ThreadPoolExecutor(min(2, len(os.sched_getaffinity(0))), thread_name_prefix="vivify-framing")
    try:
        for path, (found, shape) in zip(paths, pool.map(found_in, paths), strict=True):
            faces.append(_largest(found, str(path)))
            needed.append(closest_share(shape, faces[-1], size))
    finally:
        pool.shutdown(cancel_futures=True)
    share = min(MAX_FACE_SHARE, max([FACE_SHARE, *needed]))
    for path, own in zip(paths, needed, strict=True):
        if own > share:
            log.warning("%s is cropped close around its face: it fills %.0f%% of its cell's height, the others' "
                        "%.0f%%", path, 100 * own, 100 * share)
    return [frame_portrait(load_portrait(path), size, points, share) for path, points in zip(paths, faces, strict=True)]


def largest_face(image: np.ndarray, name: str) -> np.ndarray:
    """The landmarks of the photo's largest face. Raises VivifyError where it has none, or one too small to
    animate."""
    return _largest(detect_faces(image), name)


def _largest(faces: list[np.ndarray], name: str) -> np.ndarray:
    """`largest_face` of the faces `detect_faces` found in the photo called `name`."""
    if not faces:
        raise VivifyError(f"no face found in {name}")
    # In the photo as given: framing scales a small face up, but not the detail it lacks.
    check_face_size(faces[0], name)
    if len(faces) > 1:
        log.warning("%s: %d faces found, framing the largest", name, len(faces))
    return faces[0]


def closest_share(shape: tuple[int, int], points: np.ndarray, size: tuple[int, int]) -> float:
    """The smallest share of a cell's height that the face (its landmarks) can fill with the cell inside the
    photo (of `shape`, H×W)."""
    height, width = shape
    cell_w, cell_h = size
    return float(max(cell_w / width, cell_h / height) * _face_height(points) / cell_h)


def frame_portrait(image: np.ndarray, size: tuple[int, int], points: np.ndarray, share: float = FACE_SHARE,
                   ) -> np.ndarray:
    """The photo cropped and scaled to `size` (W, H) so the face of these landmarks fills `share` of the cell's
    height, more where the photo is too small for that (the window never leaves the photo)."""
    cell_w, cell_h = size
    height, width = image.shape[:2]
    top, bottom = points[:, 1].min(), points[:, 1].max()
    centre_x = (points[:, 0].min() + points[:, 0].max()) / 2
    scale = max(share * cell_h / _face_height(points), cell_w / width, cell_h / height)
    window_w, window_h = cell_w / scale, cell_h / scale
    x0 = float(np.clip(centre_x - window_w / 2, 0, width - window_w))
    y0 = float(np.clip((top + bottom) / 2 - FACE_CENTRE * window_h, 0, height - window_h))
    window = image[int(y0):min(height, math.ceil(y0 + window_h)), int(x0):min(width, math.ceil(x0 + window_w))]
    return cv2.resize(window, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _face_height(points: np.ndarray) -> float:
    return max(1.0, float(points[:, 1].max() - points[:, 1].min()))


@dataclass
class Grid:
    """The canvas of a `rows`×`cols` grid of `cell` (W, H) cells, with optional captions under the faces."""

    rows: int
    cols: int
    cell: tuple[int, int]
    captions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        cell_w, cell_h = self.cell
        self.size = (self.cols * cell_w, self.rows * cell_h)
        self._canvas = np.full((self.size[1], self.size[0], 3), _BACKGROUND, np.uint8)
        for number, text in enumerate(self.captions, start=1):
            missing = missing_glyphs(font_for(text), text) if text else ""
            if missing:
                log.warning("caption %d: no installed font draws %s (shown as boxes)", number, " ".join(missing))
        self._captions: list[Overlay | None] = [
            None if not text else text_overlay(text, self.cell, CAPTION_HEIGHT, "bottom-centre",
                                               origin=self.origin(index))
            for index, text in enumerate(self.captions)]

    def origin(self, index: int) -> tuple[int, int]:
        """Top-left corner (x, y) of cell `index`, row by row."""
        row, col = divmod(index, self.cols)
        return col * self.cell[0], row * self.cell[1]

    def compose(self, cells: list[np.ndarray]) -> np.ndarray:
        """The grid frame (RGB uint8) with `cells` in order; the array is reused for the next frame."""
        cell_w, cell_h = self.cell
        for index, image in enumerate(cells):
            x, y = self.origin(index)
            self._canvas[y:y + cell_h, x:x + cell_w] = image
            caption = self._captions[index] if index < len(self._captions) else None
            if caption is not None:
                caption.apply(self._canvas)
        return self._canvas
