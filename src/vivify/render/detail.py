"""Fine expression detail: wrinkles, creases and shading that move with an expression.

The driver's change of appearance since the reference frame is carried over as a ratio image (Liu, Shan
and Zhang, "Expressive Expression Mapping with Ratio Images", SIGGRAPH 2001): the lightness of both driving
frames, smoothed a little (the warps align features to about a pixel), is warped onto the target face, and
the ratio of the two is clamped, so that it darkens a crease or lifts a cheek but never paints the driver's
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
# On the forehead, a ratio under this is hair that has fallen over it since the reference (a fringe that
# swings), not shading: the ratio is left out there and for this many eye spans around it, where the lock's
# soft edges lie. (Hair over the reference's forehead is left out already: `FeatureAgreement`.)
_COVERED = 0.5
_OCCLUSION_MARGIN = 0.06
# The forehead's outline: the face oval's upper arc, from temple to temple over the top, and the brows below it
# (at _BROWS in it).
_FOREHEAD_ARC = np.concatenate([topology.FACE_OVAL[-6:], topology.FACE_OVAL[:7]])
_FOREHEAD_OUTLINE = np.concatenate([_FOREHEAD_ARC, topology.LEFT_BROW, topology.RIGHT_BROW])
_BROWS = (slice(len(_FOREHEAD_ARC), len(_FOREHEAD_ARC) + len(topology.LEFT_BROW)),
          slice(len(_FOREHEAD_ARC) + len(topology.LEFT_BROW), None))
# Added to both frames before dividing, so dark pixels and compression noise don't blow up.
_FLOOR = 12.0
# Features are compared at this scale (in eye spans), on images this many pixels between the eyes ...
_STRUCTURE_SCALE = 0.06
_STRUCTURE_EYE_SPAN = 40.0
# ... and a difference of local contrast this large (as a share of the local lightness) counts as another
# person's feature.
_FOREIGN_CONTRAST = 0.08


def shading(image: np.ndarray, eye_span: float) -> np.ndarray:
    """A driving frame's lightness (uint8), smoothed a little for `detail_gain` (`eye_span`: the driving face's,
    in the frame): the warps align features to about a pixel. Lightness only: a ratio per colour channel would
    tint another person's skin with the driver's."""
    blur = _shading_blur(eye_span)
    return cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (blur, blur), 0)


def shading_under(image: np.ndarray, eye_span: float, frame_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The `shading` of only the part of a driving frame that `frame_map` (h×w×2 float32, frame pixels) reads,
    and the map moved onto that part. `detail_gain` samples the same values from them as from the whole frame's
    shading; a face that fills a small part of the frame costs a small part of the work (a 1080×1920 phone
    clip's whole frame took 5 ms, a quarter of a grid cell's render)."""
    blur = _shading_blur(eye_span)
    # The blur reads blur // 2 pixels around each pixel, and a bilinear sample the pixel after its position; and
    # beyond the frame's edge, where the sample repeats the edge pixel, that pixel's blur reads as far inside.
    reach = blur // 2 + 2
    height, width = image.shape[:2]
    size = np.array([width, height])
    # OpenCV's reductions and subtraction: NumPy's over an h×w×2 map loop two values at a time, 20 times slower.
    lowest, highest = (cv2.reduce(cv2.reduce(frame_map, 0, op), 1, op).reshape(2)
                       for op in (cv2.REDUCE_MIN, cv2.REDUCE_MAX))
    low = np.clip(np.floor(lowest).astype(int) - reach, 0, np.maximum(size - 1 - reach, 0))
    high = np.clip(np.ceil(highest).astype(int) + reach + 1, np.minimum(low + reach + 1, size), size)
    (x0, y0), (x1, y1) = low.tolist(), high.tolist()
    return shading(image[y0:y1, x0:x1], eye_span), cv2.subtract(frame_map, (float(x0), float(y0), 0.0, 0.0))


def _shading_blur(eye_span: float) -> int:
    """The side of `shading`'s blur (odd, pixels) for a face `eye_span` pixels between the eyes."""
    return max(1, int(eye_span * 0.02)) * 2 + 1


def detail_gain(origin: tuple[int, int], box: Box, target: np.ndarray, frame: np.ndarray,
                reference: np.ndarray, frame_map: np.ndarray, reference_map: np.ndarray, scale: float,
                features: tuple[FeatureAgreement, np.ndarray] | None = None) -> np.ndarray:
    """The gain (h×w×3 float32) by which `apply_detail` multiplies the face's box: the driver's ratio image
    inside a feathered face mask. `frame` and `reference` are the two driving frames' `shading`; `frame_map`
    and `reference_map` map the face's box into them.
    `box` is in region pixels and `origin` is the region's corner in the output.
    `scale` (≤ 1) is the driving face's size over the target's: the ratio holds no finer detail than the
    driving frame, so it is worked out at that size. `features`, where given, is the portrait's
    `FeatureAgreement` with the map of the face's box into the portrait: the ratio is kept only where the
    agreement holds. Reads no output pixels: it may be worked out while the face is being composited."""
    x0, y0, x1, y1 = box
    ox, oy = origin
    width, height = x1 - x0, y1 - y0
    small = (max(2, round(width * scale)), max(2, round(height * scale)))
    if small != (width, height):
        frame_map = cv2.resize(frame_map, small, interpolation=cv2.INTER_LINEAR)
        reference_map = cv2.resize(reference_map, small, interpolation=cv2.INTER_LINEAR)
    now = cv2.remap(frame, frame_map, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    before = cv2.remap(reference, reference_map, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    now = now.astype(np.float32) + _FLOOR
    before = before.astype(np.float32) + _FLOOR
    shrink = small[0] / width
    unit = topology.inter_ocular(target) * shrink
    raw = cv2.divide(now, before)
    ratio = np.clip(raw, *_RATIO_RANGE) - 1.0
    _leave_out_occlusions(ratio, raw, (target[_FOREHEAD_OUTLINE, :2] - (ox + x0, oy + y0)) * shrink, unit)
    if features is not None:
        agreement, portrait_map = features
        ratio *= agreement.sample(portrait_map, topology.inter_ocular(target), small)

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


def _leave_out_occlusions(ratio: np.ndarray, raw: np.ndarray, outline: np.ndarray, unit: float) -> None:
    """Leave out of `ratio` (in place) where the raw ratio `raw` shows the driver's forehead covered by hair, not
    shading (`_COVERED`), and around it. `outline`: the target's _FOREHEAD_OUTLINE in the ratio's pixels; `unit`:
    the eye span there. Elsewhere such ratios are features that moved (a mouth that opens dark), which the ratio
    carries."""
    # First the box from the oval's top down to the brows (most frames show no such ratio there), then the
    # forehead itself: the oval above the brows, the brows left out.
    (x0, y0), (x1, y1) = np.floor(outline.min(axis=0)).astype(int), np.ceil(outline.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, raw.shape[1]), min(y1, raw.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    box = raw[y0:y1, x0:x1]
    occluded = (box < _COVERED).astype(np.uint8)
    if not occluded.any():
        return
    corner = np.array([x0, y0])
    forehead = np.zeros_like(occluded)
    cv2.fillConvexPoly(forehead, cv2.convexHull((outline - corner).astype(np.int32)), 1)
    for brow in _BROWS:
        cv2.fillConvexPoly(forehead, cv2.convexHull((outline[brow] - corner).astype(np.int32)), 0)
    occluded &= forehead
    if not occluded.any():
        return
    reach = max(1, int(unit * _OCCLUSION_MARGIN)) * 2 + 1
    occluded = cv2.dilate(occluded, np.ones((reach, reach), np.uint8)) & forehead
    ratio[y0:y1, x0:x1] *= 1.0 - cv2.GaussianBlur(occluded.astype(np.float32), (reach, reach), 0)


def apply_detail(out: np.ndarray, origin: tuple[int, int], box: Box, gain: np.ndarray) -> None:
    """Multiply the face's box in `out` (in place) by a `detail_gain`."""
    x0, y0, x1, y1 = box
    ox, oy = origin
    face = out[oy + y0:oy + y1, ox + x0:ox + x1]
    face[:] = cv2.multiply(face, gain, dtype=cv2.CV_8U)


def feature_lightness(image: np.ndarray, eye_span: float) -> np.ndarray:
    """An image's lightness (RGB or RGBA), blurred for `detail_gain` to sample it at about _STRUCTURE_EYE_SPAN
    px between the eyes without aliasing (`eye_span`: the face's, in the image)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY if image.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
    return cv2.GaussianBlur(gray, (0, 0), max(0.5, 0.5 * eye_span / _STRUCTURE_EYE_SPAN))


class FeatureAgreement:
    """Where the driver's reference face shows the portrait's own features, in the portrait's pixels: 1 where
    their local structure agrees (the same person, or plain skin in both), falling to 0 where the driver has a
    feature the portrait has not (eyeliner, a heavier brow) or the other way round. There the ratio would
    paint the driver's feature in, a little off its place, as a streak.

    Both faces are compared once, when the reference is set, with the reference warped onto the portrait's own
    face: each frame then only looks the agreement up where the warp takes the face's pixels from.
    """

    def __init__(self, portrait: np.ndarray, corner: tuple[int, int], reference: np.ndarray,
                 reference_map: np.ndarray, eye_span: float) -> None:
        """`portrait` and `reference` are `feature_lightness` images; `reference_map` (h×w×2) maps the box of the
        portrait whose top-left pixel is `corner` (x, y) into the reference frame; `eye_span` is the portrait's."""
        # Every step-th pixel: the lightness images are blurred for that spacing.
        self._step = max(1, round(eye_span / _STRUCTURE_EYE_SPAN))
        self._corner = np.float32(corner)
        step = self._step
        height, width = reference_map.shape[:2]
        x, y = corner
        own = portrait[y:y + height:step, x:x + width:step].astype(np.float32) + _FLOOR
        theirs = cv2.remap(reference, np.ascontiguousarray(reference_map[::step, ::step]), None, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float32) + _FLOOR
        sigma = _STRUCTURE_SCALE * eye_span / step
        # Each over its own local mean: the contrast of its features, whatever the skin's lightness.
        contrast = [cv2.divide(image, cv2.GaussianBlur(image, (0, 0), sigma)) for image in (own, theirs)]
        mismatch = cv2.GaussianBlur(cv2.absdiff(*contrast), (0, 0), sigma)
        self._image = np.clip(1.0 - mismatch * (1.0 / _FOREIGN_CONTRAST), 0.0, 1.0)

    def sample(self, portrait_map: np.ndarray, eye_span: float, size: tuple[int, int]) -> np.ndarray:
        """The agreement over a box whose map into the portrait's pixels is `portrait_map`, brought to `size`
        (W, H); `eye_span`: the face's in the map's pixels."""
        # The map at about the agreement's own spacing: a slice costs nothing, resizing the map would.
        step = max(1, round(eye_span / _STRUCTURE_EYE_SPAN))
        where = portrait_map[::step, ::step] - self._corner
        where *= 1.0 / self._step
        sampled = cv2.remap(self._image, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return cv2.resize(sampled, size, interpolation=cv2.INTER_LINEAR)
