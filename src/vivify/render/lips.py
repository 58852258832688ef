"""Lips that close over what the face showed between them.

Where the target closes a mouth that the source face holds open (a smile with teeth, a video caught
mid-word), the warp squeezes the teeth into the thin gap that is left: a pale streak between the lips. Here
that gap is painted over with the lips' own colour, darkening towards the line where they meet. Where the
caller knows its warp, the paint also covers every pixel that the warp took from between the source's lips:
a wide-open mouth squeezed shut leaves teeth at its corners, beyond the thin gap.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from vivify.landmarks import topology
from vivify.render.patch import Box, blend_into, region_around

# The seam is fully painted once the mouth has closed this much (inter-ocular units) from the source's gap ...
_CLOSING_RAMP = 0.03
# ... and only on lips that (nearly) meet: under the first gap, fading out by the second. A mouth still open
# shows its interior, squeezed or not.
_MET, _APART = 0.02, 0.04
# Where the lips meet, their colour is darkened to this share (the shadow between closed lips).
_SEAM_SHADE = 0.7


def interior_seen(source: np.ndarray, source_map: np.ndarray, origin: tuple[int, int]) -> Callable[[Box], np.ndarray]:
    """Where a warp shows the `source` face's mouth interior: a function from a box of the output (x0, y0, x1,
    y1) to a float32 mask over it (1: taken from between the source's inner lips). `source_map` is the warp's
    backward map (into the source's pixels) over the region whose top-left output pixel is `origin`."""

    def seen(box: Box) -> np.ndarray:
        x0, y0, x1, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        # The map over the box, where it lies in the region.
        rx, ry = origin
        height, width = source_map.shape[:2]
        ax0, ay0, ax1, ay1 = max(x0, rx), max(y0, ry), min(x1, rx + width), min(y1, ry + height)
        if ax1 <= ax0 or ay1 <= ay0:
            return mask
        inner = source[topology.LIPS_INNER, :2]
        corner = np.floor(inner.min(axis=0)) - 2
        inside = np.zeros(tuple((np.ceil(inner.max(axis=0)) + 3 - corner).astype(int)[::-1]), np.float32)
        cv2.fillPoly(inside, [np.round(inner - corner).astype(np.int32)], 1.0)
        taken = source_map[ay0 - ry:ay1 - ry, ax0 - rx:ax1 - rx] - corner.astype(np.float32)
        mask[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = cv2.remap(inside, taken, None, cv2.INTER_LINEAR,
                                                                borderMode=cv2.BORDER_CONSTANT)
        return mask

    return seen


def close_lips(out: np.ndarray, source: np.ndarray, target: np.ndarray,
               seen: Callable[[Box], np.ndarray] | None = None) -> None:
    """Paint the lips closed in `out` (RGB uint8, in place) where the `target` landmarks' inner-lip gap is
    smaller than the `source` face's, the face whose pixels the warp carried there; also wherever `seen` (see
    `interior_seen`) says the warp showed the source's mouth interior."""
    unit = topology.inter_ocular(target)
    gap_now = topology.mouth_gap(target) / unit
    closing = topology.mouth_gap(source) / topology.inter_ocular(source) - gap_now
    strength = float(np.clip(closing / _CLOSING_RAMP, 0.0, 1.0) * np.clip((_APART - gap_now) / (_APART - _MET), 0, 1))
    if strength <= 0:
        return
    outer = target[topology.LIPS_OUTER, :2]
    found = region_around(out, outer)
    if found is None:
        return
    box, offset = found
    inner = np.round(target[topology.LIPS_INNER, :2] - offset).astype(np.int32)
    lips = np.zeros(box.shape[:2], np.uint8)
    cv2.fillPoly(lips, [np.round(outer - offset).astype(np.int32)], 1)
    cv2.fillPoly(lips, [inner], 0)
    if lips.sum() < 10:
        return
    colour = np.median(box[lips.astype(bool)], axis=0)
    # The squeezed interior spreads a pixel or two beyond the thin polygon (bilinear sampling).
    reach = max(1, round(0.012 * unit))
    gap = np.zeros(box.shape[:2], np.float32)
    cv2.fillPoly(gap, [inner], 1.0)
    cv2.polylines(gap, [inner], True, 1.0, thickness=2 * reach + 1)
    if seen is not None:
        x0, y0 = (int(v) for v in offset)
        shown = seen((x0, y0, x0 + box.shape[1], y0 + box.shape[0]))
        # Within the lips only (the interior may be carried beyond them where the mouth is not closing),
        # grown by the bilinear spread, like the gap's band.
        shown *= cv2.dilate(lips, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)).astype(np.float32)
        np.maximum(gap, cv2.dilate(shown, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)), out=gap)
    seam = np.zeros(box.shape[:2], np.float32)
    cv2.polylines(seam, [inner], True, 1.0, thickness=max(1, reach))
    seam = cv2.GaussianBlur(seam, (2 * reach + 1, 2 * reach + 1), 0)
    shade = 1.0 - (1.0 - _SEAM_SHADE) * seam
    paint = np.clip(colour[None, None, :] * shade[..., None], 0, 255).astype(np.uint8)
    mask = cv2.GaussianBlur(gap, (2 * reach + 1, 2 * reach + 1), 0) * strength
    blend_into(box, paint, mask)
