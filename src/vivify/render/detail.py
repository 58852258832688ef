"""Fine expression detail: wrinkles, creases and shading that move with an expression.

The driver's change of appearance since the reference frame is carried over as a ratio image (Liu, Shan
and Zhang, "Expressive Expression Mapping with Ratio Images", SIGGRAPH 2001): both driving frames are
warped onto the target face, the ratio of their lightness is smoothed a little (the warps align features
to about a pixel) and clamped, so that it darkens a crease or lifts a cheek but never paints the driver's
own features, colouring or highlights in, and the rendered face is multiplied by it inside a feathered
face mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from vivify.landmarks import topology
from vivify.render.patch import Box

# The ratio may darken to this and brighten to this: a crease, not a new face.
_RATIO_RANGE = (0.75, 1.25)
# Added to both frames before dividing, so dark pixels and compression noise don't blow up.
_FLOOR = 12.0


def detail_gain(origin: tuple[int, int], box: Box, target: np.ndarray, frame: np.ndarray,
                reference: np.ndarray, frame_map: np.ndarray, reference_map: np.ndarray, scale: float) -> np.ndarray:
    """The gain (h×w×3 float32) by which `apply_detail` multiplies the face's box: the driver's ratio image
    inside a feathered face mask. `box` is in region pixels and `origin` is the region's corner in the output.
    `scale` (≤ 1) is the driving face's size over the target's: the ratio holds no finer detail than the
    driving frame, so it is worked out at that size. Reads no output pixels: it may be worked out while the
    face is being composited."""
    x0, y0, x1, y1 = box
    ox, oy = origin
    width, height = x1 - x0, y1 - y0
    small = (max(2, round(width * scale)), max(2, round(height * scale)))
    if small != (width, height):
        frame_map = cv2.resize(frame_map, small, interpolation=cv2.INTER_LINEAR)
        reference_map = cv2.resize(reference_map, small, interpolation=cv2.INTER_LINEAR)
    now = cv2.remap(frame, frame_map, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    before = cv2.remap(reference, reference_map, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    shrink = small[0] / width
    unit = topology.inter_ocular(target) * shrink
    blur = max(1, int(unit * 0.02)) * 2 + 1
    # Lightness only: a ratio per colour channel would tint another person's skin with the driver's.
    now = cv2.GaussianBlur(cv2.cvtColor(now, cv2.COLOR_RGB2GRAY), (blur, blur), 0).astype(np.float32) + _FLOOR
    before = cv2.GaussianBlur(cv2.cvtColor(before, cv2.COLOR_RGB2GRAY), (blur, blur), 0).astype(np.float32) + _FLOOR
    ratio = np.clip(cv2.divide(now, before), *_RATIO_RANGE) - 1.0

    # The face mask, also at the ratio's size; only the finished gain is brought to the face's size.
    mask = np.zeros((small[1], small[0]), np.float32)
    oval = (target[topology.FACE_OVAL, :2] - (ox + x0, oy + y0)) * shrink
    cv2.fillPoly(mask, [np.round(oval).astype(np.int32)], 1.0)
    # Keep off the silhouette, where hair and background do not align.
    feather = max(1, int(unit * 0.08)) * 2 + 1
    mask = cv2.erode(mask, np.ones((feather // 2, feather // 2), np.uint8))
    mask = cv2.GaussianBlur(mask, (feather, feather), 0)
    gain = ratio * mask
    gain += 1.0
    gain = cv2.merge([gain] * 3)
    if small != (width, height):
        gain = cv2.resize(gain, (width, height), interpolation=cv2.INTER_LINEAR)
    return gain


def apply_detail(out: np.ndarray, origin: tuple[int, int], box: Box, gain: np.ndarray) -> None:
    """Multiply the face's box in `out` (in place) by a `detail_gain`."""
    x0, y0, x1, y1 = box
    ox, oy = origin
    face = out[oy + y0:oy + y1, ox + x0:ox + x1]
    face[:] = cv2.multiply(face, gain, dtype=cv2.CV_8U)
