"""Relative motion transfer: the driving face's change since a reference frame, applied to the portrait.

Each driving frame is split into a rigid head pose (a similarity fitted on points that expressions barely
move) and a non-rigid residual in the pose-normalised frame of the reference. The two are filtered apart
(One-Euro) so that a still face does not jitter and a quick head turn does not lag, then re-expressed in the
portrait's own frame and scale, so the portrait keeps its face shape (relative mode) or takes the driver's
(absolute mode). The lips thin and swell, and the eyes open and close, in proportion to the portrait's own lips and
eyes against the driver's.
"""

from __future__ import annotations

import numpy as np

from vivify.landmarks import topology
from vivify.landmarks.filter import OneEuroFilter
from vivify.motion.articulation import Articulator
from vivify.motion.pose import IDENTITY, Similarity, fit_similarity

# Pairs (upper, lower) of eyelid and inner-lip points that must never cross: a driver's blink or a closing
# mouth can ask for more travel than the portrait's own, smaller opening has.
_EYELID_PAIRS = np.vstack([eye.lid_pairs for eye in topology.EYES])
_NON_CROSSING_PAIRS = np.vstack([_EYELID_PAIRS, [
    (13, 14), (82, 87), (81, 178), (80, 88), (191, 95), (312, 317), (311, 402), (310, 318), (415, 324),
]])
# An eye opens at most this much wider than the portrait's own (the eye interior is carried over from the
# driver beyond it): a backstop for an eye that `_ClosedEye` does not take for closed at the reference.
_MAX_EYE_OPENING = 2.5

# A reference eye less than this share as open as the portrait's (`topology.Eye.openness`) was caught closing
# (a blink, a wink), not at the driver's neutral: see `_ClosedEye`.
_CAUGHT_CLOSING = 0.5
# Such an eye's neutral is the driver's widest settled opening (lids moved under _LIDS_SETTLED since the frame
# before: not halfway through opening) up to _NEUTRAL_SECONDS after it first opens to _OPENED times the
# reference's.
_LIDS_SETTLED = 0.02
_NEUTRAL_SECONDS = 1.0
_OPENED = 1.5

# At most this many times the driver's closing below a reference less open than the portrait's mouth.
_MAX_CLOSING_STRETCH = 3.0

# A lip's changes of thickness are scaled by the portrait's lip against the driver's, an eye's changes of
# opening by the portrait's eye against the driver's, within these bounds.
_LIP_SCALES = (0.5, 2.0)
_EYE_SCALES = (0.25, 4.0)

# Frames over which the face eases back to the driver after it was lost (held pose meanwhile).
EASE_FRAMES = 8


class MotionTransfer:
    """Maps driving landmarks (478×3, pixels of the driving frame) to target landmarks of the portrait."""

    def __init__(self, portrait_points: np.ndarray, rate: float = 30.0, absolute: bool = False,
                 smoothing: bool = True) -> None:
        self.portrait = np.asarray(portrait_points, dtype=np.float64)[:, :2]
        self.absolute = absolute
        self.smoothing = smoothing
        self.rate = rate
        self.reference: np.ndarray | None = None
        self._to_portrait: Similarity | None = None
        # Pose and residual are filtered in inter-ocular units, so the same settings hold for any face
        # size. A low cutoff at rest removes detector noise (a third of it is left); the steep rise with
        # speed keeps the lag on real motion small (self-reenactment AKD 1.78 px against 1.72 unfiltered).
        self._pose_filter = OneEuroFilter(rate, min_cutoff=0.5, beta=100.0, shared_speed=True)
        self._expression_filter = OneEuroFilter(rate, min_cutoff=0.5, beta=100.0, shared_speed=True)
        self._held: tuple[np.ndarray, np.ndarray] | None = None
        self._lost = False
        self._ease_step = EASE_FRAMES

    def set_reference(self, driving_points: np.ndarray) -> None:
        """Make this driving face the neutral one: its pose and expression map to the portrait's own, except a mouth
        more open than the portrait's, which opens the portrait's as far, and one less open, from which the
        driver's closing shuts the portrait's."""
        self.reference = np.asarray(driving_points, dtype=np.float64)[:, :2]
        self._unit = topology.inter_ocular(self.reference)
        self._to_portrait = fit_similarity(self.reference[topology.RIGID], self.portrait[topology.RIGID])
        self._base = self._to_portrait.apply(self.reference) if self.absolute else self.portrait
        self._jaw = Articulator(self._base)
        # A reference caught with the mouth more open than the portrait's (`best` weighs the whole face): the
        # portrait's jaw drops by the difference, so that its mouth shuts where the driver's shuts, instead of
        # shutting where the driver's is still as open as in the reference and staying shut below it.
        reference_gap, own_gap = self._jaw.gap(self._to_portrait.apply(self.reference)), self._jaw.gap(self._base)
        self._reference_opening = self._jaw.jaw_drop(max(reference_gap - own_gap, 0.0))
        # A reference less open than the portrait's mouth (a smile that shows the teeth): the driver's closing
        # below it is stretched so that the portrait's mouth shuts where the driver's shuts, instead of staying
        # open by the difference. At most _MAX_CLOSING_STRETCH times, so that a reference caught shut does not
        # turn the landmarks' noise into a snapping mouth.
        self._closing_stretch = 1.0
        if own_gap > max(reference_gap, 0.0):
            self._closing_stretch = (_MAX_CLOSING_STRETCH if reference_gap <= 0.0
                                     else min(own_gap / reference_gap, _MAX_CLOSING_STRETCH))
        self._own_gap = own_gap
        # A lip thinner than the driver's thins (and swells) in proportion: a smile stretches each lip by a share
        # of its thickness. Added as it is, the driver's thinning left a thin-lipped portrait's lips at half their
        # thickness or less (Mona Lisa in a driver's closed smile: the shadow under her lower lip came up against
        # the seam, a second line that read as parted lips).
        mapped = self._to_portrait.apply(self.reference)
        self._lip_scales = [_scale(_thickness(self._base, lip), _thickness(mapped, lip), _LIP_SCALES)
                            for lip in topology.LIP_CONTOUR_PAIRS]
        # Eyes too: a narrow eye shut whenever the driver's narrowed (Trump's, 0.4 as open as the driver's, in
        # every squint of a smile), and a wide one stayed half open through the driver's blinks.
        self._own_eyes = [eye.openness(self._base) for eye in topology.EYES]
        self._eye_scales = [_scale(own, eye.openness(self.reference), _EYE_SCALES)
                            for eye, own in zip(topology.EYES, self._own_eyes, strict=True)]
        # An eye that the reference caught closing where the portrait's is open: the driver's opening it again
        # would open the portrait's by as much on top of its own, a stare for the whole clip (`_ClosedEye`).
        self._closed_eyes = [_ClosedEye(index, eye, openness, round(_NEUTRAL_SECONDS * self.rate))
                             for index, eye in enumerate(topology.EYES)
                             if (openness := eye.openness(self.reference))
                             < _CAUGHT_CLOSING * eye.openness(self._base)]
        self._pose_filter.reset()
        self._expression_filter.reset()
        self._held = None
        self._lost = False
        self._ease_step = EASE_FRAMES

    @property
    def to_portrait(self) -> Similarity:
        """The similarity from the driver's reference frame onto the portrait (once a reference is set)."""
        if self._to_portrait is None:
            raise RuntimeError("MotionTransfer.to_portrait before a reference is set")
        return self._to_portrait

    def target(self, driving_points: np.ndarray | None) -> tuple[np.ndarray, Similarity]:
        """Target landmarks (478×2, portrait pixels) and the head's rigid motion in portrait pixels."""
        if driving_points is None:
            if self._held is None:  # no face seen yet: the portrait as it is
                return self._base_or_portrait(), IDENTITY
            self._lost = True
            return self._compose(*self._held)
        if self.reference is None:
            self.set_reference(driving_points)
        pose_params, expression = self._measure(np.asarray(driving_points, dtype=np.float64)[:, :2])
        if self.smoothing:
            pose_params = self._pose_filter(pose_params)
            expression = self._expression_filter(expression)
        if self._closed_eyes:
            expression = expression.copy()  # the filter's output may be its own state
            for eye in self._closed_eyes:
                eye.measure_from_neutral(driving_points, expression)
        if self._lost:
            self._ease_step, self._lost = 0, False
        if self._ease_step < EASE_FRAMES and self._held is not None:
            self._ease_step += 1
            weight = self._ease_step / EASE_FRAMES
            pose_params = self._held[0] + weight * (pose_params - self._held[0])
            expression = self._held[1] + weight * (expression - self._held[1])
        self._held = (pose_params, expression)
        return self._compose(pose_params, expression)

    def _base_or_portrait(self) -> np.ndarray:
        return self._base.copy() if self.reference is not None else self.portrait.copy()

    def _measure(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pose (tx, ty in face units, log scale, angle) and residual (face units) relative to the reference."""
        pose = fit_similarity(self.reference[topology.RIGID], points[topology.RIGID])
        residual = pose.inverse().apply(points) - self.reference
        params = pose.as_params()
        params[:2] /= self._unit
        return params, residual / self._unit

    def _compose(self, pose_params: np.ndarray, expression: np.ndarray) -> tuple[np.ndarray, Similarity]:
        params = pose_params.copy()
        params[:2] *= self._unit
        pose = Similarity.from_params(params)
        to_portrait = self.to_portrait
        # The driver's head motion, re-expressed about the portrait's head: A ∘ pose ∘ A⁻¹.
        head_motion = to_portrait.compose(pose).compose(to_portrait.inverse())
        expression = self._in_proportion(expression)
        shaped = self._base + self._reference_opening + (expression * self._unit) @ to_portrait.linear.T
        shaped = _uncross(self._stop_the_jaw_at_closed(self._stretch_closing(_limit_eye_opening(shaped, self._base))))
        return head_motion.apply(shaped), head_motion

    def _in_proportion(self, expression: np.ndarray) -> np.ndarray:
        """The residual with each lip's outer contour moving against its inner one by the lip's scale, and each
        eye's lids against each other by the eye's (from the driver's neutral opening where the reference caught
        the eye closing)."""
        expression = expression.copy()
        for (outer, inner), scale in zip(topology.LIP_CONTOUR_PAIRS, self._lip_scales, strict=True):
            expression[outer] = expression[inner] + scale * (expression[outer] - expression[inner])
        eye_scales = list(self._eye_scales)
        for closed in self._closed_eyes:
            if closed.neutral_openness is not None:
                eye_scales[closed.index] = _scale(self._own_eyes[closed.index], closed.neutral_openness, _EYE_SCALES)
        for eye, scale in zip(topology.EYES, eye_scales, strict=True):
            middle = (expression[eye.upper] + expression[eye.lower]) / 2
            expression[eye.upper] = middle + scale * (expression[eye.upper] - middle)
            expression[eye.lower] = middle + scale * (expression[eye.lower] - middle)
        return expression

    def _stretch_closing(self, shaped: np.ndarray) -> np.ndarray:
        """Close the mouth further by the stretch of the driver's closing below the reference (`set_reference`)."""
        if self._closing_stretch == 1.0:
            return shaped
        closing = self._own_gap - self._jaw.gap(shaped)
        if closing <= 0.0:
            return shaped
        return shaped + self._jaw.jaw_drop(-(self._closing_stretch - 1.0) * closing)

    def _stop_the_jaw_at_closed(self, shaped: np.ndarray) -> np.ndarray:
        """Where the driver's mouth closes further than shut (lips pressed together, or read as crossed), the jaw
        stops where the lips meet: the chin and lower lip do not rise on and squeeze the lips. (A reference more
        open than the portrait's no longer leads here: `_reference_opening` evens it out.)"""
        gap = self._jaw.gap(shaped)
        if gap >= 0.0:
            return shaped
        return shaped + self._jaw.jaw_drop(-gap)


class _ClosedEye:
    """An eye that the reference frame caught closing (`MotionTransfer.set_reference`): its changes are measured
    from the driver's widest settled opening in its first second open instead, which then maps to the
    portrait's own opening. Until the driver's eye has settled open, the portrait's keeps its own."""

    def __init__(self, index: int, eye: topology.Eye, openness: float, frames: int) -> None:
        self.index = index  # in topology.EYES
        self._eye = eye
        self.points = np.concatenate([eye.contour, eye.iris])  # the points a blink moves
        self._widest, self._last, self._open_from = openness, openness, _OPENED * openness
        self._opened = False  # the driver's eye has opened to _open_from since the reference
        self._frames_left = frames  # counted from the first frame the eye is open
        self._neutral: np.ndarray | None = None  # the eye's expression at its widest settled opening

    @property
    def neutral_openness(self) -> float | None:
        """The driver's eye's opening at its neutral (`topology.Eye.openness`), once there is one."""
        return None if self._neutral is None else self._widest

    def measure_from_neutral(self, driving_points: np.ndarray, expression: np.ndarray) -> None:
        """Measure the eye's part of this frame's expression (in place) from its neutral."""
        openness = self._eye.openness(driving_points)
        settled = abs(openness - self._last) < _LIDS_SETTLED
        self._last = openness
        if self._frames_left > 0 and settled and openness > self._widest:
            self._widest, self._neutral = openness, expression[self.points]  # indexing copies
        self._opened = self._opened or openness >= self._open_from  # open once: the count runs from here
        if self._opened:
            self._frames_left -= 1
        expression[self.points] = 0.0 if self._neutral is None else expression[self.points] - self._neutral


def _scale(own: float, driver: float, bounds: tuple[float, float]) -> float:
    """The portrait's measure over the driver's, within `bounds`."""
    return float(np.clip(own / max(driver, 1e-6), *bounds))


def _thickness(points: np.ndarray, lip: tuple[np.ndarray, np.ndarray]) -> float:
    """A lip's mean distance from its outer contour to its inner one."""
    outer, inner = lip
    return float(np.linalg.norm(points[outer] - points[inner], axis=1).mean())


def _limit_eye_opening(points: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Lower upper eyelids that would open the eye beyond _MAX_EYE_OPENING times the base opening."""
    upper, lower = _EYELID_PAIRS[:, 0], _EYELID_PAIRS[:, 1]
    opening = points[lower, 1] - points[upper, 1]
    # An eye nearly closed in the portrait may still open to an ordinary width.
    limit = _MAX_EYE_OPENING * np.maximum(base[lower, 1] - base[upper, 1], 0.0) + 0.08 * topology.inter_ocular(base)
    excess = opening - limit
    if not (excess > 0).any():
        return points
    points = points.copy()
    points[upper, 1] += np.maximum(excess, 0.0)
    return points


def _uncross(points: np.ndarray) -> np.ndarray:
    """Where a lower lid or lip would rise above its upper partner, meet in the middle instead."""
    upper, lower = points[_NON_CROSSING_PAIRS[:, 0]], points[_NON_CROSSING_PAIRS[:, 1]]
    crossed = lower[:, 1] < upper[:, 1]
    if not crossed.any():
        return points
    points = points.copy()
    middle = 0.5 * (upper[crossed] + lower[crossed])
    points[_NON_CROSSING_PAIRS[crossed, 0]] = middle
    points[_NON_CROSSING_PAIRS[crossed, 1]] = middle
    return points
