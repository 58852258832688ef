"""Several faces of one photo animated in place: each face's render, blended where each face owns the picture.

Every face has its own `Animator` over the same photo; each render differs from the photo only inside that
face's region (the head, hair and neck, tapering to the still photo at the region's edges). The renders are
combined with weights that sum to one everywhere: a soft partition of the photo by distance to each face,
measured in that face's size, so a face's own warp rules around it and neighbouring regions meet in a smooth
band instead of a seam. Outside every region the photo is copied as it is.
"""

from __future__ import annotations

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
        self._weights = [w[..., None].astype(np.float32) for w in weights]
        # Per-frame buffers, reused: the writer copies each frame it is given.
        self._out = portrait.copy()
        self._blended = np.empty(weights.shape[1:] + (3,), np.float32)
        self._term = np.empty_like(self._blended)

    def compose(self, renders: list[np.ndarray]) -> np.ndarray:
        """One frame from the renders (RGB uint8, the photo's size), in the order of the faces. The array is
        reused for the next frame."""
        rows, cols = self._box
        np.multiply(self._weights[0], renders[0][rows, cols], out=self._blended)
        for weight, render in zip(self._weights[1:], renders[1:], strict=True):
            np.multiply(weight, render[rows, cols], out=self._term)
            self._blended += self._term
        # The weights sum to one, so the blend stays within 0..255: rounding is all that is left.
        self._blended += 0.5
        self._out[rows, cols] = self._blended
        return self._out
