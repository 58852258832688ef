"""Several faces of one photo animated in place: each face's render, blended where each face owns the picture.

Every face has its own `Animator` over the same photo; each render differs from the photo only inside that
face's region (the head, hair and neck, tapering to the still photo at the region's edges). The renders are
combined with weights that sum to one everywhere: a soft partition of the photo by distance to each face,
measured in that face's size, so a face's own warp rules around it and neighbouring regions meet in a smooth
band instead of a seam. Outside every region the photo is copied as it is.
"""

from __future__ import annotations

import cv2
import numpy as np

# Sharpness of the partition: the weight of a face falls by e^-1 for each SHARPNESS-th of a face height
# that a pixel lies further from it than from its neighbour.
SHARPNESS = 6.0


class GroupComposer:
    """Blends renders of the same photo, one per face, into one frame."""

    def __init__(self, portrait: np.ndarray, faces: list[np.ndarray], regions: list[tuple[slice, slice]]) -> None:
        self._portrait = portrait
        rows = slice(min(r.start for r, _ in regions), max(r.stop for r, _ in regions))
        cols = slice(min(c.start for _, c in regions), max(c.stop for _, c in regions))
        self._box = (rows, cols)
        ys, xs = np.mgrid[rows, cols].astype(np.float32)
        distances = []
        for points in faces:
            centre = points[:, :2].mean(axis=0)
            size = float(points[:, 1].max() - points[:, 1].min())
            distances.append(np.hypot(xs - centre[0], ys - centre[1]) / size)
        logits = -SHARPNESS * np.stack(distances)
        logits -= logits.max(axis=0)
        weights = np.exp(logits)
        weights /= weights.sum(axis=0)
        # A render differs from the photo only inside its face's region, and the weights sum to one: the frame is
        # the photo weighted by what no region covers, plus each render weighted over its own region only.
        self._regions = regions
        self._inside = [(slice(r.start - rows.start, r.stop - rows.start),  # each region within the box
                         slice(c.start - cols.start, c.stop - cols.start)) for r, c in regions]
        uncovered = np.ones(weights.shape[1:], np.float32)
        for weight, inside in zip(weights, self._inside, strict=True):
            uncovered[inside] -= weight[inside]
        self._photo_part = portrait[rows, cols] * uncovered[..., None]
        self._weights = [cv2.merge([weight[inside]] * 3) for weight, inside in zip(weights, self._inside, strict=True)]
        # Per-frame buffers, reused: the writer copies each frame it is given.
        self._out = portrait.copy()
        self._blended = np.empty_like(self._photo_part)
        self._as_float = [np.empty(weight.shape, np.float32) for weight in self._weights]  # each render's region

    def compose(self, renders: list[np.ndarray]) -> np.ndarray:
        """One frame from the renders (RGB uint8, the photo's size), in the order of the faces. The array is
        reused for the next frame."""
        rows, cols = self._box
        np.copyto(self._blended, self._photo_part)
        for region, inside, weight, render, as_float in zip(self._regions, self._inside, self._weights, renders,
                                                             self._as_float, strict=True):
            np.copyto(as_float, render[region], casting="unsafe")
            cv2.accumulateProduct(as_float, weight, self._blended[inside])
        # The blend stays within 0..255: converting rounds it.
        self._out[rows, cols] = cv2.convertScaleAbs(self._blended)
        return self._out
