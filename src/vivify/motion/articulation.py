"""A portrait's face posed by parameters instead of a driving face: jaw and lips, blinks, brows, head turns.

Speech has no driving video, so its landmarks are made here: the portrait's own landmarks, deformed in the
face's own frame (origin between the mouth corners, x along the eyes, inter-ocular units) and turned in 3D.
The renderer then treats them like any driving face's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vivify.landmarks import topology

_MOUTH_CORNERS = (61, 291)
# Share of the jaw's drop that the upper lip rises.
_UPPER_LIP_RISE = 0.12
_EYE_WIDTH = 0.3  # inter-ocular units


@dataclass(frozen=True)
class FacePose:
    """One frame's face: mouth (`open`: inner-lip gap, `wide`: each corner's move outwards, inter-ocular units;
    `round`: 0..1; `rest`: 0..1, how far the mouth is left as the portrait has it instead), `blink` (0 open ..
    1 closed), `brow` (raise, inter-ocular units), head rotation (`yaw`, `pitch`, `roll`, radians) and gaze
    (`gaze_x`, `gaze_y`: iris shift, eye widths)."""

    open: float = 0.0
    wide: float = 0.0
    round: float = 0.0
    rest: float = 0.0
    blink: float = 0.0
    brow: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0


class Articulator:
    """Poses one portrait face. `landmarks(pose)` gives 478×3 landmarks in the portrait's pixels."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = np.asarray(points, dtype=np.float64).copy()
        flat = self.points[:, :2]
        self.unit = topology.inter_ocular(flat)
        axis = topology.eye_line(flat)
        self._axes = np.stack([axis, [-axis[1], axis[0]]])  # rows: face x, face y (down)
        self._origin = flat[list(_MOUTH_CORNERS)].mean(axis=0)
        local = (flat - self._origin) @ self._axes.T / self.unit
        x, y = local[:, 0], local[:, 1]
        half_width = abs(local[_MOUTH_CORNERS[1], 0] - local[_MOUTH_CORNERS[0], 0]) / 2
        self.own_open = topology.mouth_gap(flat) / self.unit

        # Which points lie below the line between the lips (and so go with the jaw).
        inner = local[topology.LIPS_INNER]
        order = np.argsort(inner[:, 0])
        midline = np.interp(x, inner[order, 0], inner[order, 1])
        below = y > midline + 1e-6
        below[list(topology.LIPS_INNER[:10])] = True  # the lower inner lip, corners included
        below[list(topology.LIPS_INNER[10:])] = False
        lower_outer = topology.LIPS_OUTER[1:10]
        below[lower_outer] = True
        across = np.clip(np.abs(x) / half_width, 0.0, 3.0)
        taper = 0.15 + 0.85 * np.exp(-0.8 * across**2)  # lips drop most at the middle, corners about half
        jaw = np.maximum(taper, 0.3 * np.clip(y / 0.5, 0.0, 1.0))  # the jaw's sides follow the chin a little
        near_lips = np.exp(-((y / 0.15) ** 2))
        self._jaw = np.where(below, jaw, -_UPPER_LIP_RISE * taper * near_lips)
        near_mouth = np.exp(-((y / 0.35) ** 2)) * np.exp(-(np.maximum(np.abs(x) - half_width, 0.0) / 0.25) ** 2)
        self._spread = np.clip(x / half_width, -1.3, 1.3) * near_mouth
        self._corner_lift = (np.clip(x / half_width, -1.3, 1.3) ** 2) * near_mouth
        self._half_width = half_width

        brows = np.concatenate([topology.LEFT_BROW, topology.RIGHT_BROW])
        self._brow = np.zeros(len(flat))
        self._brow[brows] = 1.0
        self._blink: list[tuple[np.ndarray, np.ndarray]] = []
        for eye in topology.EYES:
            upper, lower, iris = eye.upper, eye.lower, eye.iris
            self._blink.append((upper, local[lower, 1] - local[upper, 1]))  # the upper lid comes down to the lower
            self._brow[upper] = 0.15  # the lids open a little with a brow raise
            order = np.argsort(local[lower, 0])
            lower_lid = np.interp(local[iris, 0], local[lower, 0][order], local[lower, 1][order])
            self._blink.append((iris, lower_lid - local[iris, 1]))  # the iris hides under the closing lid
        self._irises = np.concatenate([eye.iris for eye in topology.EYES])
        self._centre = self.points[topology.RIGID].mean(axis=0)

    def landmarks(self, pose: FacePose) -> np.ndarray:
        """The portrait's landmarks in `pose` (478×3, x and y in pixels, z in MediaPipe's pixel scale)."""
        dx = np.zeros(len(self.points))
        dy = np.zeros(len(self.points))
        # Rounding draws the corners in as spreading pushes them out; a spread lifts them a little.
        dx += (pose.wide - 0.3 * pose.round * self._half_width) * self._spread
        dy -= 0.4 * max(pose.wide, 0.0) * self._corner_lift
        dy -= pose.brow * self._brow
        for indices, gap in self._blink:
            dy[indices] += pose.blink * gap
        dx[self._irises] += pose.gaze_x * _EYE_WIDTH
        dy[self._irises] += pose.gaze_y * _EYE_WIDTH
        points = self.points.copy()
        points[:, :2] += (np.stack([dx, dy], axis=1) @ self._axes) * self.unit
        # Open to the asked gap from the portrait's own.
        points[:, :2] += self.jaw_drop((1.0 - pose.rest) * (pose.open - self.own_open))
        return _turn(points, self._centre, pose.yaw, pose.pitch, pose.roll)

    def jaw_drop(self, gap: float) -> np.ndarray:
        """Moves (478×2, pixels) that part the lips `gap` more (inter-ocular units; less where negative): the
        jaw drops, with the lower lip and the chin, and the upper lip rises a little."""
        dy = (gap / (1.0 + _UPPER_LIP_RISE)) * self._jaw
        return np.outer(dy, self._axes[1]) * self.unit

    def gap(self, points: np.ndarray) -> float:
        """The inner lips' gap of these landmarks (pixels, this face's orientation) along the face's own vertical,
        in inter-ocular units: negative where the lower lip has risen above the upper."""
        return float((points[topology.LOWER_INNER_LIP, :2] - points[topology.UPPER_INNER_LIP, :2]) @ self._axes[1]
                     / self.unit)


def _turn(points: np.ndarray, centre: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotate about `centre`: yaw about the vertical axis, pitch about the horizontal, roll in the image plane;
    seen straight on (orthographic), as MediaPipe's landmarks are."""
    if not (yaw or pitch or roll):
        return points
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    yaw_m = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    pitch_m = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    roll_m = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    rotation = roll_m @ yaw_m @ pitch_m
    return (points - centre) @ rotation.T + centre
