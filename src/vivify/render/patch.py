"""Small painted patches: the part of a frame a feature's landmarks cover, and blending a patch into it."""

from __future__ import annotations

import functools

import cv2
import numpy as np

# A box as (x0, y0, x1, y1): x0, y0 inclusive, x1, y1 exclusive.
Box = tuple[int, int, int, int]


def region_around(image: np.ndarray, points: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray] | None:
    """The view of `image` around `points` (x, y), `margin` px wider on each side, and its top-left corner
    (x, y, float64); None where less than 4 px of it is left on a side (a feature too small or outside the
    frame to paint)."""
    height, width = image.shape[:2]
    x0, y0 = np.maximum(np.floor(points.min(axis=0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(points.max(axis=0)).astype(int) + margin + 1, [width, height])
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    return image[y0:y1, x0:x1], np.array([x0, y0], dtype=np.float64)


def blend_into(box: np.ndarray, patch: np.ndarray, weight: np.ndarray) -> None:
    """box ← patch·weight + box·(1 − weight), in place; `weight` float32 in 0..1, one per pixel."""
    box[:] = cv2.blendLinear(patch, np.ascontiguousarray(box), weight, 1.0 - weight)


@functools.lru_cache(maxsize=64)
def feather(size: tuple[int, int], width: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights (h, w) over a box of `size` (w, h): 0 on its edge, rising smoothly to 1 at `width` pixels inside
    it; and one minus them. Boxes keep much the same size from frame to frame, so they are kept (read-only)."""
    ramps = [smoothstep(np.clip(np.minimum(np.arange(n), n - 1 - np.arange(n)) / width, 0.0, 1.0)).astype(np.float32)
             for n in size]
    weight = np.minimum.outer(ramps[1], ramps[0])
    inverse = 1.0 - weight
    weight.flags.writeable = inverse.flags.writeable = False
    return weight, inverse


def smoothstep(w: np.ndarray) -> np.ndarray:
    """0 at 0, 1 at 1 (inputs in 0..1), with level ends: blends that meet without a crease."""
    return w * w * (3 - 2 * w)
