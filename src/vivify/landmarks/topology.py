"""Named index sets of MediaPipe Face Mesh's 478 landmarks (468 mesh points + 2×5 iris points)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

FACE_OVAL = np.array([
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
])
LIPS_OUTER = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185])
# Inner lip contour as a closed polygon: lower lip left→right, then upper lip right→left.
LIPS_INNER = np.array([78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191])
LEFT_BROW = np.array([70, 63, 105, 66, 107, 55, 65, 52, 53, 46])
RIGHT_BROW = np.array([300, 293, 334, 296, 336, 285, 295, 282, 283, 276])
NOSE = np.array([1, 2, 4, 5, 6, 168, 197, 195, 98, 327, 129, 358, 48, 278, 64, 294])
CHEEKS = np.array([50, 280, 187, 411, 205, 425, 36, 266, 117, 346, 123, 352, 200, 199, 175, 151, 9, 108, 337])


@dataclass(frozen=True)
class Eye:
    """One eye's landmarks. Its corners, lids and brow run in the image's left-to-right order of an upright
    face, from `corners[0]` to `corners[1]`."""

    corners: tuple[int, int]
    upper: np.ndarray  # the upper lid's margin between the corners
    lower: np.ndarray  # the lower lid's margin, facing `upper` point for point
    iris: np.ndarray  # the iris centre, then its four rim points
    brow: np.ndarray  # the lower edge of the brow above it
    surround: np.ndarray  # a ring between the lid margin and the brow: skin that sets the eye's colour

    @cached_property
    def contour(self) -> np.ndarray:
        """The eye's outline as a closed polygon: the lower lid from corner to corner, then the upper back."""
        return np.concatenate([[self.corners[0]], self.lower, [self.corners[1]], self.upper[::-1]])

    @cached_property
    def upper_lid(self) -> np.ndarray:
        """The upper lid from corner to corner, corners included."""
        return np.concatenate([[self.corners[0]], self.upper, [self.corners[1]]])

    @cached_property
    def lid_pairs(self) -> np.ndarray:
        """Upper and lower lid points facing each other across the eye (n × 2), the corners' neighbours left
        out: they meet the other lid at the corner whether the eye is open or shut."""
        return np.stack([self.upper[1:-1], self.lower[1:-1]], axis=1)

    @property
    def middle_lids(self) -> tuple[int, int]:
        """The upper and lower lid points in the middle of the eye."""
        middle = len(self.upper) // 2
        return int(self.upper[middle]), int(self.lower[middle])

    def openness(self, points: np.ndarray) -> float:
        """How open the eye is in `points`: its mean lid gap over its width (corner to corner); about 0.2-0.35
        open, under 0.07 shut. Independent of the face's size and of where it looks."""
        pairs = self.lid_pairs
        gap = np.linalg.norm(points[pairs[:, 0], :2] - points[pairs[:, 1], :2], axis=1).mean()
        width = float(np.linalg.norm(points[self.corners[0], :2] - points[self.corners[1], :2]))
        return float(gap / max(width, 1e-6))


LEFT_EYE = Eye(corners=(33, 133), upper=np.array([246, 161, 160, 159, 158, 157, 173]),
               lower=np.array([7, 163, 144, 145, 153, 154, 155]), iris=np.arange(468, 473),
               brow=np.array([46, 53, 52, 65, 55]),
               surround=np.array([124, 113, 225, 224, 223, 222, 221, 189, 244, 233, 232, 231, 230, 229, 228, 31]))
RIGHT_EYE = Eye(corners=(362, 263), upper=np.array([398, 384, 385, 386, 387, 388, 466]),
                lower=np.array([382, 381, 380, 374, 373, 390, 249]), iris=np.arange(473, 478),
                brow=np.array([285, 295, 282, 283, 276]),
                surround=np.array([353, 342, 445, 444, 443, 442, 441, 413, 464, 453, 452, 451, 450, 449, 448, 261]))
EYES = (LEFT_EYE, RIGHT_EYE)

# Points that barely move with expression: the head pose is fitted on them.
RIGID = np.array([
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 127, 356, 234, 454, 162, 389, 21, 251, 98, 327,
])

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
# Each lip's outer contour against its inner one, point by point (LIPS_OUTER and LIPS_INNER run alike), the
# corners left out: the lower lip's (outer, inner) points, then the upper's.
LIP_CONTOUR_PAIRS = ((LIPS_OUTER[1:10], LIPS_INNER[1:10]), (LIPS_OUTER[11:], LIPS_INNER[11:]))

# The points that steer the warp: every other point of each feature's contour (the spline bends smoothly
# between them; the full set costs three times as much to solve for little gain), the iris centres.
WARP_CONTROLS = np.unique(np.concatenate([
    FACE_OVAL[::2], LIPS_OUTER[::2], LIPS_INNER[::2], LEFT_EYE.contour[::2], RIGHT_EYE.contour[::2], LEFT_BROW[::2],
    RIGHT_BROW[::2], NOSE[::2], CHEEKS[::2], [UPPER_INNER_LIP, LOWER_INNER_LIP, LEFT_EYE.iris[0], RIGHT_EYE.iris[0]],
]))


def inter_ocular(points: np.ndarray) -> float:
    """Distance between the outer eye corners: the face's size unit."""
    return float(np.linalg.norm(points[LEFT_EYE.corners[0], :2] - points[RIGHT_EYE.corners[1], :2]))


def eye_line(points: np.ndarray) -> np.ndarray:
    """The unit vector from the outer corner of the eye on the image's left to that of the other: the face's
    horizontal."""
    line = points[RIGHT_EYE.corners[1], :2] - points[LEFT_EYE.corners[0], :2]
    return line / max(float(np.linalg.norm(line)), 1e-9)


def distance_in_faces(points: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """How far each position (`xs`, `ys`: pixel coordinates) lies from the centre of the face with the landmarks
    `points`, in that face's heights: which face of a group photo a pixel is nearest, or belongs to how much."""
    centre = points[:, :2].mean(axis=0)
    return np.hypot(xs - centre[0], ys - centre[1]) / float(np.ptp(points[:, 1]))


def landmarks_apart(points: np.ndarray, other: np.ndarray) -> float:
    """Mean distance between corresponding landmarks of two readings of a face, in `points`' inter-ocular
    distances."""
    return float(np.linalg.norm(other[:, :2] - points[:, :2], axis=1).mean()) / inter_ocular(points)


def mouth_gap(points: np.ndarray) -> float:
    """Inner-lip gap in the units of the points."""
    return float(np.linalg.norm(points[UPPER_INNER_LIP, :2] - points[LOWER_INNER_LIP, :2]))
