"""Interiors a portrait cannot show: the mouth opened wider than in the photo, an eye opened wider.

The driving frame's own interior (teeth, tongue, cavity; iris and sclera) is mapped into the target's
opening by the affine that best carries the driver's feature contour onto the target's, stretched across the
opening so that the driver's opening fills the target's; recoloured to the portrait (mean and spread in Lab,
measured on a ring around the opening and smoothed over time so it does not flicker) and blended in with a
feathered mask. Without a usable driving mouth a synthetic cavity with a row of teeth stands in.

A portrait that shows its own teeth keeps them: they ride on its lips, parted where its photo parts them, and a
drawn cavity opens between. Only a driver whose open mouths show teeth of their own has its interior carried
over them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from vivify.landmarks import topology
from vivify.motion.pose import fit_similarity
from vivify.render.patch import blend_into, region_around

# An interior is fully in once a gap (inter-ocular units) is this much past the feature's threshold.
_GAP_RAMP = 0.05
# Smaller driving openings (px) carry too little detail to copy.
_MIN_DRIVING_GAP = 3.0
# Exponential smoothing of the colour transfer across frames.
_COLOUR_MEMORY = 0.8
# A carried mouth's darkest tenth is deepened to at most this share of the lips' mean lightness, by a power
# curve on the tones below the lips' (see `_deepen`) with an exponent of at most _MAX_CAVITY_GAMMA.
_CAVITY_DARKNESS = 0.2
_MAX_CAVITY_GAMMA = 3.0
# A driver whose wide-open mouths show teeth (grey levels lighter than its lips by _TEETH_LIGHTER) over this
# share of the opening on average is carried in full over a portrait's own teeth: liveportrait_d6's show them
# over 0.35-0.46 of it, vox_driving2's soft video over none.
_TEETH_SHOWN = 0.25
_TEETH_LIGHTER = 15
# The average is settled after this many wide-open mouths (a driving video does not change its make-up).
_TEETH_SAMPLES = 50
# Lips with less colour than this (mean Lab chroma, 8-bit units) make a drawn interior as pale: a
# colour photo's lips have 25-45 (the shared portraits).
_PLAIN_CHROMA = 10.0


_lab_tables_lock = threading.Lock()
_lab_tables: threading.Thread | None = None
_lab_tables_built = threading.Event()


def build_lab_tables() -> None:
    """Start building OpenCV's Lab conversion tables in a thread (the first call does); every Lab conversion here
    waits for them first (`_wait_for_lab_tables`). OpenCV builds them on first use, unguarded by a lock, in
    170 ms: the first frame with an open mouth would stall. Started while a portrait is analysed (`Animator`),
    on the other core, they cost no time.

    Not a daemon thread: a process that stops early (a portrait without a face) waits for it at exit, instead
    of tearing down the interpreter under OpenCV (which aborts the process)."""
    global _lab_tables
    with _lab_tables_lock:
        if _lab_tables is None:
            _lab_tables = threading.Thread(target=_build_lab_tables, name="vivify-lab-tables")
            _lab_tables.start()


def _build_lab_tables() -> None:
    try:
        cv2.cvtColor(np.zeros((1, 1, 3), np.uint8), cv2.COLOR_RGB2LAB)
    finally:
        _lab_tables_built.set()


def _wait_for_lab_tables() -> None:
    """Wait until the Lab tables are built. On an event, not Thread.join: a join cut short by Ctrl-C (CPython
    3.11) leaves the thread marked as ended while it runs on, the exit then no longer waits for it, and OpenCV
    aborts the process."""
    build_lab_tables()
    _lab_tables_built.wait()


@dataclass(frozen=True)
class Feature:
    """A facial opening: its contour, the contour around it, and the pair of points that measure its gap."""

    opening: np.ndarray  # closed polygon of the opening (inner lips, eyelid margin)
    surround: np.ndarray  # closed polygon around it; the ring between the two sets the colour
    gap: tuple[int, int]
    # Also copy the driver's interior when the driver shows one, not only where the portrait lacks one:
    # right for teeth, which a warp of the portrait's own can only stretch; wrong for eyes (identity).
    carry_shown: bool
    synthetic_fallback: bool
    # Deepen the carried interior's shadows: a cavity is dark however flat the driving video's contrast is.
    deepen_shadows: bool
    # The interior starts to appear as the gap passes this (inter-ocular units).
    start: float


MOUTH = Feature(topology.LIPS_INNER, topology.LIPS_OUTER, (topology.UPPER_INNER_LIP, topology.LOWER_INNER_LIP),
                carry_shown=True, synthetic_fallback=True, deepen_shadows=True, start=0.01)
LEFT_EYE = Feature(topology.LEFT_EYE.contour, topology.LEFT_EYE.surround, topology.LEFT_EYE.middle_lids,
                   carry_shown=False, synthetic_fallback=False, deepen_shadows=False, start=0.03)
RIGHT_EYE = Feature(topology.RIGHT_EYE.contour, topology.RIGHT_EYE.surround, topology.RIGHT_EYE.middle_lids,
                    carry_shown=False, synthetic_fallback=False, deepen_shadows=False, start=0.03)


class InteriorPainter:
    """Paints one feature's interior into rendered frames, keeping its colour transfer across frames."""

    def __init__(self, feature: Feature, points: np.ndarray, portrait: np.ndarray | None = None) -> None:
        """`portrait` (RGB uint8, with the landmarks `points`), where given, is the picture painted from: where its
        feature shows an interior of its own (a smile with teeth), that interior is kept and parted, not replaced
        by the driver's."""
        self.feature = feature
        self.refit(points)
        self._fit = np.concatenate([feature.surround, feature.opening])
        # The portrait and its landmarks, where its feature shows an interior, and where that interior parts.
        self._own: tuple[np.ndarray, np.ndarray] | None = None
        self._parting = 1.0
        self._own_lips_colour = math.inf  # `_lips_colour` in the portrait
        found = None
        if portrait is not None and self._ramp(self._own_gap) >= 1.0:
            found = region_around(portrait, np.asarray(points)[self._fit, :2])
        if found is not None:  # both read from the photo around the feature, not the whole photo
            self._own = (portrait, np.asarray(points)[:, :2])
            box, offset = found
            opening = self._own[1][feature.opening] - offset
            self._parting = _parting(box, opening)
            self._own_lips_colour = _lips_colour(box, self._own[1][feature.surround] - offset, opening)
        self._colour: tuple[np.ndarray, np.ndarray, float] | None = None  # the transfer's gain, shift, lighter gain
        self._cavity_gamma: float | None = None
        self._teeth_shown = [0.0, 0]  # the teeth's shares of the driver's wide-open mouths so far: sum, count

    def refit(self, points: np.ndarray) -> None:
        """The face painted into has changed (a video's own frames, when dubbing): measure its opening again,
        keeping the colour transfer's memory so the interior does not flicker from frame to frame."""
        self._own_gap = self._gap(points)

    def _gap(self, points: np.ndarray) -> float:
        upper, lower = self.feature.gap
        return float(np.linalg.norm(points[upper, :2] - points[lower, :2])) / topology.inter_ocular(points)

    def _carried_in(self) -> float:
        """How far the driver's interior is laid over a portrait's own: by the share of the driver's wide-open
        mouths that was teeth, on average over the first _TEETH_SAMPLES of them so far (none before the driver
        first opens wide)."""
        total, count = self._teeth_shown
        return min(total / count / _TEETH_SHOWN, 1.0) if count else 0.0

    def _ramp(self, gap: float) -> float:
        """0 up to the feature's start, rising to 1 over _GAP_RAMP."""
        return min(max((gap - self.feature.start) / _GAP_RAMP, 0.0), 1.0)  # on a float: np.clip costs 5 µs

    def paint(self, out: np.ndarray, target: np.ndarray, frame: np.ndarray, driving: np.ndarray | None) -> None:
        """Blend the interior into `out` (in place) inside the target's opening."""
        feature = self.feature
        target_gap = self._gap(target)
        # Needed where the warp would have to invent what the portrait does not show ...
        needed = self._ramp(target_gap - self._own_gap)
        upper, lower = feature.gap
        usable = driving is not None and np.linalg.norm(driving[upper, :2] - driving[lower, :2]) >= _MIN_DRIVING_GAP
        # ... and, for the mouth, wanted where the driver's open mouth shows a real one to carry over.
        shown = self._ramp(self._gap(driving)) if usable and feature.carry_shown else 0.0
        # ... where the warp changes the portrait's own opening: as open as the portrait's, its own teeth are right.
        changed = min(abs(target_gap - self._own_gap) / _GAP_RAMP, 1.0)
        carried_strength = max(needed, min(shown, self._ramp(target_gap), changed))
        if not (usable or feature.synthetic_fallback):
            carried_strength = 0.0
        # A portrait's own interior, parted, shows just what the warp shows where the opening is unchanged. It
        # gives way to a driver whose open mouths show teeth (`_carried_in`), measured where the driver's is open.
        own_strength = changed if self._own is not None else 0.0
        measure = self._own is not None and usable and shown >= 1.0 and self._teeth_shown[1] < _TEETH_SAMPLES
        if carried_strength + own_strength <= 0 and not measure:
            return
        opening = target[feature.opening, :2]
        fit = target[self._fit, :2]
        found = region_around(out, fit)
        if found is None:
            return
        box, offset = found
        size = (box.shape[1], box.shape[0])

        surround = target[feature.surround, :2] - offset
        carried = None  # the driver's, where it is measured or laid in (not over a portrait's own teeth alone)
        if usable and (measure or (carried_strength > 0 and (self._own is None or self._carried_in() > 0))):
            carried = _carried_patch(frame, driving[self._fit, :2], fit - offset, size,
                                     driving[feature.opening, :2], opening - offset)
        if measure:
            self._teeth_shown[0] += _teeth_share(carried, surround, opening - offset)
            self._teeth_shown[1] += 1
        if self._own is not None:
            weight = self._carried_in()
            carried_strength *= weight
            own_strength *= 1.0 - weight
        strength = carried_strength + own_strength
        if strength <= 0:
            return
        patch = None
        if carried_strength > 0:
            patch = (self._recolour(carried, box, surround, opening - offset) if carried is not None else
                     _no_more_colourful(_synthetic_cavity(opening - offset, size),
                                        _lips_colour(box, surround, opening - offset)))
        if own_strength > 0:
            image, points = self._own
            own, gap = _parted_patch(image, points[self._fit], fit - offset, size, points[feature.opening],
                                     opening - offset, self._parting)
            if gap.any():  # opened wider than the portrait's own: a cavity between the parts
                cavity = _no_more_colourful(_synthetic_cavity(opening - offset, size, with_teeth=False),
                                            self._own_lips_colour)
                blend_into(own, cavity, gap)
            patch = own if patch is None else cv2.addWeighted(patch, carried_strength / strength, own,
                                                              own_strength / strength, 0.0)

        mask = np.zeros(box.shape[:2], np.float32)
        cv2.fillPoly(mask, [np.round(opening - offset).astype(np.int32)], 1.0)
        feather = max(1, int(topology.inter_ocular(target) * 0.015)) * 2 + 1
        mask = cv2.GaussianBlur(mask, (feather, feather), 0) * strength
        blend_into(box, patch, mask)

    def _recolour(self, patch: np.ndarray, box: np.ndarray, surround: np.ndarray, opening: np.ndarray) -> np.ndarray:
        """Match the driver's ring around the opening (and so the interior) to the portrait's, in Lab mean and
        spread; for a mouth, then deepen what lies below the lips' lightness."""
        inside, ring = _ring(box.shape[:2], surround, opening)
        if ring.sum() < 10:
            return patch
        _wait_for_lab_tables()
        lab_patch = cv2.cvtColor(patch, cv2.COLOR_RGB2LAB).astype(np.float32)
        lab_box = cv2.cvtColor(box, cv2.COLOR_RGB2LAB)
        src_mean, src_std = cv2.meanStdDev(lab_patch, mask=ring)
        dst_mean, dst_std = cv2.meanStdDev(lab_box, mask=ring)
        # Lightness keeps some contrast (teeth against cavity); chroma may vanish (a black-and-white photo).
        gain = np.clip(dst_std / np.maximum(src_std, 1.0), [[0.6], [0.0], [0.0]], 1.6).ravel()
        shift = dst_mean.ravel() - gain * src_mean.ravel()
        # Tones lighter than the lips (teeth, the white of an eye) stand out at least as far as one light on both
        # would make them: by the lips' ratio of lightness. Lips smoother than the driver's (a soft or small
        # photo) spread less, and the spread's gain alone dimmed the driver's teeth to the lips' tone, which reads
        # as a closed mouth. Darker tones keep it: the cavity, deepened below.
        lighter = min(max(float(gain[0]), float(dst_mean[0, 0]) / max(float(src_mean[0, 0]), 1.0)), 1.6)
        if self._colour is not None:
            gain, shift, lighter = (_COLOUR_MEMORY * old + (1 - _COLOUR_MEMORY) * new
                                    for old, new in zip(self._colour, (gain, shift, lighter), strict=True))
        self._colour = (gain, shift, lighter)
        lab_patch = lab_patch * gain.astype(np.float32) + shift.astype(np.float32)
        lightness = lab_patch[..., 0]
        lips = max(float(gain[0] * src_mean[0, 0] + shift[0]), 1.0)  # the ring's mean lightness after the transfer
        if lighter > gain[0]:
            teeth = lightness > lips
            lightness[teeth] = lips + (lightness[teeth] - lips) * (lighter / gain[0])
        if self.feature.deepen_shadows:
            self._deepen(lightness, lips, inside > 0)
        return cv2.cvtColor(np.clip(lab_patch, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)

    def _deepen(self, lightness: np.ndarray, lips: float, opening: np.ndarray) -> None:
        """Darken (in place) the tones below the lips' until the darkest tenth of the opening (a boolean mask) is
        _CAVITY_DARKNESS of them. A low-contrast driving video (soft light, compression) carries a grey cavity
        between pale teeth, which reads as closed lips, to people and landmark detectors alike (dlib read such
        mouths as shut); a cavity that is dark already is left as it is."""
        np.clip(lightness, 0.0, None, out=lightness)
        tones = lightness[opening]
        if tones.size == 0:
            return
        tenth = len(tones) // 10  # np.partition, not np.percentile: 0.01 ms against 0.25 ms, every frame
        darkest = float(np.partition(tones, tenth)[tenth]) / lips
        if darkest >= 1.0:  # no cavity at all (teeth together): nothing to deepen
            gamma = 1.0
        else:
            gamma = float(np.clip(np.log(_CAVITY_DARKNESS) / np.log(max(darkest, 1e-3)), 1.0, _MAX_CAVITY_GAMMA))
        if self._cavity_gamma is not None:  # smoothed like the colour, so the cavity does not flicker
            gamma = _COLOUR_MEMORY * self._cavity_gamma + (1 - _COLOUR_MEMORY) * gamma
        self._cavity_gamma = gamma
        below = opening & (lightness < lips)  # the carried lips around the opening keep their tones
        lightness[below] = lips * (lightness[below] / lips) ** gamma


def _ring(shape: tuple[int, ...], surround: np.ndarray, opening: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (uint8) of the opening and of the ring between it and the contour around it, in a box of `shape`."""
    inside = np.zeros(shape, np.uint8)
    cv2.fillPoly(inside, [np.round(opening).astype(np.int32)], 1)
    ring = np.zeros(shape, np.uint8)
    cv2.fillPoly(ring, [np.round(surround).astype(np.int32)], 1)
    ring[inside > 0] = 0
    return inside, ring


def _teeth_share(patch: np.ndarray, surround: np.ndarray, opening: np.ndarray) -> float:
    """The share of the opening that is teeth: lighter than the lips (the ring) by _TEETH_LIGHTER grey levels."""
    inside, ring = _ring(patch.shape[:2], surround, opening)
    if ring.sum() < 10 or inside.sum() < 10:
        return 0.0
    grey = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)
    lips = float(grey[ring > 0].mean())
    return float(np.mean(grey[inside > 0] > lips + _TEETH_LIGHTER))


def _lips_colour(image: np.ndarray, surround: np.ndarray, opening: np.ndarray) -> float:
    """The colour of the lips around an opening in `image` (the ring between `surround` and `opening`: mean Lab
    chroma) as a share of _PLAIN_CHROMA; infinite where the ring is too small to tell."""
    _, ring = _ring(image.shape[:2], surround, opening)
    if ring.sum() < 10:
        return math.inf
    _wait_for_lab_tables()
    chroma = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[ring > 0, 1:].astype(np.float32) - 128.0
    return float(np.sqrt((chroma**2).sum(axis=1)).mean()) / _PLAIN_CHROMA


def _no_more_colourful(patch: np.ndarray, lips_colour: float) -> np.ndarray:
    """A drawn interior with its colour scaled down to the lips' (`_lips_colour`) where they have less than
    _PLAIN_CHROMA: a black-and-white photo gets a grey mouth, not a red one."""
    if lips_colour >= 1.0:
        return patch
    lab = cv2.cvtColor(patch, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 1:] = 128.0 + (lab[..., 1:] - 128.0) * lips_colour
    return cv2.cvtColor(np.clip(np.round(lab), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _carried_patch(frame: np.ndarray, source: np.ndarray, target: np.ndarray, size: tuple[int, int],
                   source_opening: np.ndarray, target_opening: np.ndarray) -> np.ndarray:
    """The driving frame around a feature, carried onto the target's feature: by the least-squares affine of
    the feature's contours, then stretched up and down the opening so the driver's opening fills the target's.

    The affine alone fits lips and opening together: an opening taller for its lips than the driver's (a
    teeth-showing portrait's, or a jaw dropped further than the driver's from its reference) showed the driver's
    lip inside it, a pink band that read as a tongue or as closed lips. In each column of the patch the target's
    opening is mapped onto the carried driver's opening; above and below it the column only shifts, so the lips
    keep their shape. Openings are closed polygons of 2k points with their corners at 0 and k
    (`topology.LIPS_INNER`, the eyes).
    """
    affine = _affine_fit(source, target)
    (target_top, target_bottom), (carried_top, carried_bottom) = _carried_sides(
        affine, size, source_opening, target_opening)
    scale = (carried_bottom - carried_top) / np.maximum(target_bottom - target_top, 1e-3)
    rows = np.arange(size[1], dtype=np.float32)[:, None]
    within = np.clip(rows, target_top, target_bottom)  # a row's place in the opening, held at its edges
    return _sampled(frame, affine, rows - within + carried_top + (within - target_top) * scale)


def _parted_patch(image: np.ndarray, source: np.ndarray, target: np.ndarray, size: tuple[int, int],
                  source_opening: np.ndarray, target_opening: np.ndarray, parting: float,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The portrait's own opening carried onto the target's, parted rather than stretched: in each column the
    share `parting` of it from the top stays with the upper lip and the rest with the lower lip, unscaled, as
    teeth stay with their jaws. Where the target opens wider than the portrait's own, a gap opens at the
    parting; where it opens less, the lips cover each part from their side. Returns the patch and the gap's
    weight (float32, 0..1, soft over a pixel) per pixel. Carried by the least-squares similarity of the contours,
    not their affine: an affine fitted to lips pulled apart stretches the teeth with them."""
    fitted = fit_similarity(source, target)
    similarity = np.vstack([fitted.linear.T, fitted.translation])  # as `_affine_fit`'s 3×2 matrix
    (target_top, target_bottom), (carried_top, carried_bottom) = _carried_sides(
        similarity, size, source_opening, target_opening)
    own, wanted = carried_bottom - carried_top, target_bottom - target_top
    covered = np.maximum(own - wanted, 0.0)
    rows = np.arange(size[1], dtype=np.float32)[:, None]
    from_top, from_bottom = rows - target_top, target_bottom - rows
    carried_rows = np.where(from_top < parting * wanted, carried_top + parting * covered + from_top,
                            carried_bottom - (1 - parting) * covered - from_bottom)
    gap = np.clip(np.minimum(from_top - parting * own, from_bottom - (1 - parting) * own) + 0.5, 0.0, 1.0)
    return _sampled(image, similarity, carried_rows), gap


def _parting(image: np.ndarray, opening: np.ndarray) -> float:
    """Where an opening that shows an interior parts as it opens, as a share of its height from the top: at its
    darkest row below the upper quarter, the median over the middle half of its width. That is the gap between
    upper and lower teeth, or the lower lip where the teeth shown are the upper ones only (then they all stay
    with the upper lip). The upper quarter is left out: the upper lip's shadow lies there."""
    left, right = opening[:, 0].min(), opening[:, 0].max()
    columns = np.arange(np.ceil(0.75 * left + 0.25 * right), 0.25 * left + 0.75 * right, dtype=np.float32)
    if not columns.size:
        return 1.0
    top, bottom = _sides(opening, columns)
    shares = np.linspace(1.0, 0.25, 16, dtype=np.float32)[:, None]  # bottom up: of equal tones, the lowest
    rows = top + shares * (bottom - top)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    tones = cv2.remap(grey, np.broadcast_to(columns, rows.shape).copy(), rows, cv2.INTER_LINEAR)
    return float(np.median(shares[np.argmin(tones, axis=0), 0]))


def _affine_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares affine that carries the points `source` onto `target`, as a 3×2 matrix M:
    [x y 1] @ M."""
    design = np.hstack([source, np.ones((len(source), 1))])
    # The normal equations: a 3×3 solve, half the time of lstsq's SVD, on these well-spread points.
    return np.linalg.solve(design.T @ design, design.T @ target)


def _carried_sides(transform: np.ndarray, size: tuple[int, int], source_opening: np.ndarray,
                   target_opening: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """In each column of a patch of `size`, the target's opening's sides and those of the source opening carried
    by `transform` (a 3×2 matrix, `_affine_fit`'s): `_sides`."""
    carried = source_opening @ transform[:2] + transform[2]
    columns = np.arange(size[0], dtype=np.float32)
    return _sides(target_opening, columns), _sides(carried, columns)


def _sampled(frame: np.ndarray, affine: np.ndarray, carried_rows: np.ndarray) -> np.ndarray:
    """The patch whose pixel (row, column) shows the point of `frame` that `affine` carries to
    (column, carried_rows[row, column])."""
    (a, b, c), (d, e, f) = cv2.invertAffineTransform(affine.T).tolist()
    columns = np.arange(carried_rows.shape[1], dtype=np.float32)
    map_x = b * carried_rows + (a * columns + c)
    map_y = e * carried_rows + (d * columns + f)
    return cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _sides(opening: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The upper and lower side of an opening (a closed polygon of 2k points, corners at 0 and k) at each of
    `columns` (x): its rows (float32), upper first; beyond the corners they hold their end rows."""
    half = len(opening) // 2
    sides = []
    for side in (opening[: half + 1], np.concatenate([opening[half:], opening[:1]])):
        order = np.argsort(side[:, 0])
        sides.append(np.interp(columns, side[order, 0], side[order, 1]))
    return np.minimum(*sides).astype(np.float32), np.maximum(*sides).astype(np.float32)


def _synthetic_cavity(opening: np.ndarray, size: tuple[int, int], with_teeth: bool = True) -> np.ndarray:
    """A mouth interior drawn from nothing: upper teeth under the upper lip (`with_teeth`), a tongue
    low in the mouth, and a cavity that darkens towards the corners and the throat (shaded, so it does not read
    as a flat hole)."""
    width, height = size
    left, top = opening.min(axis=0)
    right, bottom = opening.max(axis=0)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    across = (xs - (left + right) / 2) / max((right - left) / 2, 1.0)  # -1 .. 1 between the corners
    down = (ys - top) / max(bottom - top, 1.0)  # 0 at the upper lip, 1 at the lower
    depth = np.clip(1.0 - 0.55 * across**2 - 0.35 * np.abs(down - 0.55), 0.25, 1.0)[..., None]
    patch = np.array([78, 30, 34], np.float32) * depth  # the cavity: dark red, darker at the corners
    tongue = np.clip(1.0 - (across / 0.75) ** 2 - ((down - 1.05) / 0.45) ** 2, 0.0, 1.0)[..., None]
    patch = patch * (1 - tongue) + np.array([150, 72, 78], np.float32) * depth * tongue
    if with_teeth:
        # Upper teeth: a band a quarter of the opening high (at most a fixed share of the mouth's width), soft
        # at its lower edge, shaded where the teeth turn away at the sides.
        teeth_height = min(0.28 * (bottom - top), 0.12 * (right - left))
        teeth = np.clip((top + teeth_height - ys) / max(1.5, 0.25 * teeth_height), 0.0, 1.0)
        teeth = (teeth * np.clip(1.2 - 0.8 * across**2, 0.0, 1.0))[..., None]
        patch = patch * (1 - teeth) + np.array([222, 214, 200], np.float32) * (0.6 + 0.4 * depth) * teeth
    return cv2.GaussianBlur(np.clip(patch, 0, 255).astype(np.uint8), (3, 3), 0)
