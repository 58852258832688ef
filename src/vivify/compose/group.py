"""Several faces of one photo animated in place: each face's render, blended where each face owns the picture.

Every face has its own `Animator` over the same photo; each render differs from the photo only inside that
face's region (the head, hair and neck, tapering to the still photo at the region's edges). The renders are
combined with weights that sum to one everywhere: a soft partition of the photo by distance to each face,
measured in that face's size, so a face's own warp rules around it and neighbouring regions meet in a smooth
band instead of a seam. Where a face's person is, moved or where the photo showed it (`Animator.coverage`), only
that face's render knows the picture: another face's render shows the photo there. Such pixels are taken from
the renders that cover them. Outside every region the photo is copied as it is.
"""

from __future__ import annotations

import cv2
import numpy as np

from vivify.landmarks.topology import distance_in_faces

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
        logits = -SHARPNESS * np.stack([distance_in_faces(points, xs, ys) for points in faces])
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
        self._weights = [np.ascontiguousarray(weight[inside]) for weight, inside in zip(weights, self._inside,
                                                                                        strict=True)]
        # Per-frame buffers, reused: the writer copies each frame it is given.
        self._out = portrait.copy()
        self._blended = np.empty_like(self._photo_part)
        self._as_float = [np.empty((*weight.shape, 3), np.float32) for weight in self._weights]  # each render's region
        self._claimed = np.empty(self._photo_part.shape[:2], np.float32)  # Σ weight · claim
        self._strongest = np.empty(self._photo_part.shape[:2], np.float32)  # the strongest claim

    def compose(self, renders: list[np.ndarray], coverages: list[np.ndarray]) -> np.ndarray:
        """One frame from the renders (RGB uint8, the photo's size) and their faces' `Animator.coverage` (uint8
        over each face's region), in the order of the faces. The array is reused for the next frame.

        Each face's weight is its share of the partition where no face's person is; where some are, its share of
        the partition among those, by how far each covers the pixel. A head that moved towards its neighbour
        showed its hair half over the neighbour's render of the photo (the hair where it was): a ghost."""
        rows, cols = self._box
        claims = [cv2.multiply(coverage, 1.0 / 255.0, dtype=cv2.CV_32F) for coverage in coverages]
        claimed, strongest = self._claimed, self._strongest
        claimed.fill(0.0)
        strongest.fill(0.0)
        for inside, weight, claim in zip(self._inside, self._weights, claims, strict=True):
            cv2.accumulateProduct(weight, claim, claimed[inside])
            cv2.max(strongest[inside], claim, dst=strongest[inside])
        unclaimed = cv2.subtract(1.0, strongest)
        per_claim = cv2.divide(strongest, cv2.max(claimed, 1e-12))
        # The photo's weight (1 - the faces'): what no region covers, where no face claims the pixel.
        cv2.multiply(self._photo_part, cv2.merge([unclaimed] * 3), dst=self._blended)
        for region, inside, weight, claim, render, as_float in zip(self._regions, self._inside, self._weights, claims,
                                                                   renders, self._as_float, strict=True):
            # By the partition where unclaimed, by the claims where claimed.
            face_weight = cv2.multiply(weight, cv2.add(cv2.multiply(per_claim[inside], claim), unclaimed[inside]))
            np.copyto(as_float, render[region], casting="unsafe")
            cv2.accumulateProduct(as_float, cv2.merge([face_weight] * 3), self._blended[inside])
        # The blend stays within 0..255: converting rounds it.
        self._out[rows, cols] = cv2.convertScaleAbs(self._blended)
        return self._out
