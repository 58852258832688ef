"""Named index sets of MediaPipe Face Mesh's 478 landmarks (468 mesh points + 2×5 iris points)."""

import numpy as np

FACE_OVAL = np.array([
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
])
LIPS_OUTER = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185])
# Inner lip contour as a closed polygon: lower lip left→right, then upper lip right→left.
LIPS_INNER = np.array([78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191])
LEFT_EYE = np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246])
RIGHT_EYE = np.array([263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466])
# Rings of points around each eye, between the lid margin and the brow: skin that sets an eye's colour.
LEFT_EYE_SURROUND = np.array([124, 113, 225, 224, 223, 222, 221, 189, 244, 233, 232, 231, 230, 229, 228, 31])
RIGHT_EYE_SURROUND = np.array([353, 342, 445, 444, 443, 442, 441, 413, 464, 453, 452, 451, 450, 449, 448, 261])
LEFT_BROW = np.array([70, 63, 105, 66, 107, 55, 65, 52, 53, 46])
RIGHT_BROW = np.array([300, 293, 334, 296, 336, 285, 295, 282, 283, 276])
NOSE = np.array([1, 2, 4, 5, 6, 168, 197, 195, 98, 327, 129, 358, 48, 278, 64, 294])
CHEEKS = np.array([50, 280, 187, 411, 205, 425, 36, 266, 117, 346, 123, 352, 200, 199, 175, 151, 9, 108, 337])
LEFT_IRIS_CENTER = 468
RIGHT_IRIS_CENTER = 473
# Each eye's iris: its centre and four rim points.
LEFT_IRIS, RIGHT_IRIS = np.arange(468, 473), np.arange(473, 478)
# Upper and lower lid points facing each other across each eye (upper, lower).
LEFT_EYE_LID_PAIRS = np.array([(159, 145), (158, 153), (160, 144), (157, 154), (161, 163)])
RIGHT_EYE_LID_PAIRS = np.array([(386, 374), (385, 380), (387, 373), (384, 381), (388, 390)])

# Points that barely move with expression: the head pose is fitted on them.
RIGID = np.array([
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 127, 356, 234, 454, 162, 389, 21, 251, 98, 327,
])

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
LEFT_EYE_LIDS, RIGHT_EYE_LIDS = (159, 145), (386, 374)
LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS = (33, 133), (362, 263)

# The points that steer the warp: every other point of each feature's contour (the spline bends smoothly
# between them; the full set costs three times as much to solve for little gain), the iris centres.
WARP_CONTROLS = np.unique(np.concatenate([
    FACE_OVAL[::2], LIPS_OUTER[::2], LIPS_INNER[::2], LEFT_EYE[::2], RIGHT_EYE[::2], LEFT_BROW[::2],
    RIGHT_BROW[::2], NOSE[::2], CHEEKS[::2], [UPPER_INNER_LIP, LOWER_INNER_LIP, LEFT_IRIS_CENTER, RIGHT_IRIS_CENTER],
]))


def inter_ocular(points: np.ndarray) -> float:
    """Distance between the outer eye corners: the face's size unit."""
    return float(np.linalg.norm(points[LEFT_EYE_CORNERS[0], :2] - points[RIGHT_EYE_CORNERS[1], :2]))


def landmarks_apart(points: np.ndarray, other: np.ndarray) -> float:
    """Mean distance between corresponding landmarks of two readings of a face, in `points`' inter-ocular
    distances."""
    return float(np.linalg.norm(other[:, :2] - points[:, :2], axis=1).mean()) / inter_ocular(points)


def eye_openness(points: np.ndarray, lid_pairs: np.ndarray, corners: tuple[int, int]) -> float:
    """How open an eye is: its mean lid gap over its width (corner to corner); about 0.2-0.35 open, under 0.07
    shut. Independent of the face's size and of where it looks."""
    gap = np.linalg.norm(points[lid_pairs[:, 0], :2] - points[lid_pairs[:, 1], :2], axis=1).mean()
    return float(gap / max(float(np.linalg.norm(points[corners[0], :2] - points[corners[1], :2])), 1e-6))


def mouth_gap(points: np.ndarray) -> float:
    """Inner-lip gap in the units of the points."""
    return float(np.linalg.norm(points[UPPER_INNER_LIP, :2] - points[LOWER_INNER_LIP, :2]))
