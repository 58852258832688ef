"""Reshaping the mouth in a video's own frames (dubbing): only the mouth and jaw move; the rest of the frame,
head motion, blinks and expression included, stays as filmed."""

from __future__ import annotations

import cv2
import numpy as np

from vivify.motion.articulation import Articulator, FacePose
from vivify.motion.pose import IDENTITY
from vivify.render.interior import MOUTH, InteriorPainter
from vivify.render.lips import close_lips, interior_seen
from vivify.render.warp import HeadWarp


class MouthReshaper:
    """Gives the mouth of each frame a new shape. The interior (teeth, tongue) comes from `interior_frame`,
    a frame of the same video with the mouth open (its landmarks `interior_points`), so the teeth are the
    speaker's own; without one a synthetic interior stands in."""

    def __init__(self, interior_frame: np.ndarray | None = None, interior_points: np.ndarray | None = None) -> None:
        self._interior_frame = interior_frame
        self._interior_points = None if interior_points is None else np.asarray(interior_points)[:, :2]
        self._painter: InteriorPainter | None = None

    def render(self, frame: np.ndarray, points: np.ndarray, pose: FacePose) -> np.ndarray:
        """`frame` (RGB uint8) with its face's mouth (landmarks `points`) in the mouth shape of `pose`; the
        pose's other parts (head, eyes, brows) are the frame's own and are ignored."""
        mouth_only = FacePose(open=pose.open, wide=pose.wide, round=pose.round, rest=pose.rest)
        target = Articulator(points).landmarks(mouth_only)[:, :2]
        height, width = frame.shape[:2]
        warp = HeadWarp((width, height), points)
        source_map, _, _ = warp.maps(target, IDENTITY)
        rows, cols = warp.region.slices
        out = frame.copy()
        out[rows, cols] = cv2.remap(frame, source_map, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if self._painter is None:
            self._painter = InteriorPainter(MOUTH, points)
        else:
            self._painter.refit(points)
        self._painter.paint(out, target, self._interior_frame, self._interior_points)
        close_lips(out, points, target, interior_seen(points, source_map, (cols.start, rows.start)))
        return out
