"""Lips that close over what the face showed between them.

Where the target closes a mouth that the source face holds open (a smile with teeth, a video caught
mid-word), the warp squeezes the teeth into the thin gap that is left: a pale streak between the lips. Here
that gap is painted over with the lips' own colour, darkening towards the line where they meet.
"""

from __future__ import annotations

import cv2
import numpy as np

from vivify.landmarks import topology
from vivify.render.patch import blend_into, region_around

# The seam is fully painted once the mouth has closed this much (inter-ocular units) from the source's gap ...
_CLOSING_RAMP = 0.03
# ... and only on lips that (nearly) meet: under the first gap, fading out by the second. A mouth still open
# shows its interior, squeezed or not.
_MET, _APART = 0.02, 0.04
# Where the lips meet, their colour is darkened to this share (the shadow between closed lips).
_SEAM_SHADE = 0.7


def close_lips(out: np.ndarray, source: np.ndarray, target: np.ndarray) -> None:
    """Paint the lips closed in `out` (RGB uint8, in place) where the `target` landmarks' inner-lip gap is
    smaller than the `source` face's, the face whose pixels the warp carried there."""
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
    seam = np.zeros(box.shape[:2], np.float32)
    cv2.polylines(seam, [inner], True, 1.0, thickness=max(1, reach))
    seam = cv2.GaussianBlur(seam, (2 * reach + 1, 2 * reach + 1), 0)
    shade = 1.0 - (1.0 - _SEAM_SHADE) * seam
    paint = np.clip(colour[None, None, :] * shade[..., None], 0, 255).astype(np.uint8)
    mask = cv2.GaussianBlur(gap, (2 * reach + 1, 2 * reach + 1), 0) * strength
    blend_into(box, paint, mask)
