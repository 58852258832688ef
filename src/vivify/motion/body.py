"""The motion around the face: the body, the neck and the hair, read from the driving video as optical flow.

Landmarks move the face; in a real video the rest of the person moves too: the body sways, the shoulders
shrug, the hair swings, and none of it follows the head rigidly. Dense optical flow from each driving frame
back to the reference frame (DIS: Kroeger, Timofte, Dai, Van Gool, ECCV 2016) measures it. The flow is
computed at a low resolution, on the driving frames resampled into the portrait's own frame through the
similarity that maps the driver's reference face onto the portrait's, so it comes out in portrait pixels and
scaled to the portrait's face. It is smoothed over the driver's person only (normalised convolution:
Knutsson and Westin, CVPR 1993): the driver's still background neither holds back a portrait's hair that
reaches beyond the driver's outline nor adds noise, and where the driver has no person near, nothing moves.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from vivify.motion.pose import Similarity

# The flow is worked out on a grid this many cells along the region's longer side: it carries only the
# body's coarse motion, and DIS at this size takes about half a millisecond.
_FLOW_SIDE = 64
# Smoothing of the flow (Gaussian sigma), as a share of the longer side: about a sixth of a face.
_SMOOTHING = 0.06
# A driving frame's motion around the face: from points (region pixels, m×2 float32) to their shifts (portrait
# pixels, m×2) and how far the driver's person is seen around them (0..1, m×1): `BodyMotion.measure`.
BodyShift = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

# Where less than this share of the smoothing window is the driver's person, its motion fades out, and the
# warp's own (the head's pose) takes over.
_PERSON_FLOOR = 0.05
# A flow cell whose frame and reference (where the flow says it came from) differ by more than _EXPLAINED grey
# levels counts less as the person's, and by _UNEXPLAINED not at all: the flow does not explain it.
_EXPLAINED, _UNEXPLAINED = 10.0, 25.0
# The driver's outline around the head is the portrait's own (`BodyMotion.outline_agreement` 1) where their
# person masks above the portrait's chin overlap by _SAME_OUTLINE or more (intersection over union), and
# another's (0) from _OTHER_OUTLINE down. On the shared clips a video's first frame against the video reads
# 0.93-0.98, and the shared portraits against the driving clips read 0.58-0.83.
_OTHER_OUTLINE, _SAME_OUTLINE = 0.86, 0.92
# The first frame's flow has no previous one to start from: it is refined from itself, as if that frame had
# been seen again, until a pass changes it by less than _SETTLED cells on average, at most _FIRST_PASSES times.
_SETTLED, _FIRST_PASSES = 0.1, 8


class BodyMotion:
    """The driver's motion around the face since its reference frame, in portrait pixels.

    >>> body = BodyMotion(origin, (width, height))     # the region of the portrait that may move
    >>> body.set_reference(reference_rgb, person, to_portrait)
    >>> shift, seen = body.measure(frame_rgb)(points)  # points: m×2 float32, region pixels

    A pixel of the output at `p` shows what the portrait has at `p + shift`; `seen` (m×1, 0..1) is how far the
    driver's person is seen around it: where it is not, the shift means nothing. Frames must come in order:
    each frame's flow starts from the previous frame's.
    """

    def __init__(self, origin: np.ndarray, size: tuple[int, int], head: np.ndarray | None = None) -> None:
        """`head`, where given, is the portrait's person mask (float 0..1) over the region's rows above its chin:
        the outline that `outline_agreement` compares the driver's with."""
        width, height = size
        self._cell = max(width, height) / _FLOW_SIDE  # region pixels per flow cell
        # At least 16 cells a side: OpenCV's DIS crashes the process on grids under 16 cells high.
        self._size = (max(16, round(width / self._cell)), max(16, round(height / self._cell)))
        self._origin = np.asarray(origin, dtype=np.float64)
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._matrix = np.zeros((2, 3))
        self._crop = (slice(0), slice(0))
        self._shrunk = (1, 1)
        self._reference: np.ndarray | None = None
        self._person: np.ndarray | None = None
        # Per cell: the flat index of the nearest cell whose flow is read, and how far that flow reaches there (0..1).
        self._read_from: tuple[np.ndarray, np.ndarray] | None = None
        self._previous: np.ndarray | None = None
        cols, rows = self._size
        self._cells = np.stack(np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32)),
                               axis=-1)
        self._head: np.ndarray | None = None
        if head is not None and len(head) >= self._cell:
            head_rows = min(rows, round(len(head) / self._cell))
            self._head = cv2.resize(head.astype(np.float32), (cols, head_rows), interpolation=cv2.INTER_AREA)
        # How far the driver's outline around the head is the portrait's own (0..1), from the reference frame:
        # where it is another's, the flow there was read off another shape (`HeadWarp.maps`' hair_follows_body).
        self.outline_agreement = 1.0

    def set_reference(self, frame: np.ndarray, person: np.ndarray, to_portrait: Similarity) -> None:
        """The driving frame that motion is measured from, its person mask (float 0..1, the frame's size) and
        the similarity from its pixels to the portrait's. Later frames must have the same size."""
        back = to_portrait.inverse()
        # The driving frame's pixels that the region covers, shrunk by a whole factor (area-averaged, so without
        # aliasing, and six times faster in OpenCV than a fractional one) to about the flow's resolution; an
        # affine resampling then lines them up with the flow's cells.
        width, height = self._size
        corners = back.apply(self._origin + self._cell * np.array([[0, 0], [width, 0], [0, height], [width, height]]))
        x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [frame.shape[1] - 1, frame.shape[0] - 1])
        x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 1, [x0 + 1, y0 + 1], frame.shape[1::-1])
        factor = int(max(1, min(back.scale * self._cell, x1 - x0, y1 - y0)))
        x1, y1 = x0 + (x1 - x0) // factor * factor, y0 + (y1 - y0) // factor * factor
        self._crop = (slice(y0, y1), slice(x0, x1))
        self._shrunk = ((x1 - x0) // factor, (y1 - y0) // factor)
        # Flow cell u lies at portrait pixel origin + cell·u, at driving pixel back() of that, and at shrunk
        # pixel (that − crop corner + ½) / factor − ½ (pixel centres, as cv2.resize places them).
        linear = back.linear * (self._cell / factor)
        offset = (back.apply(self._origin[None])[0] - [x0, y0] + 0.5) / factor - 0.5
        self._matrix = np.hstack([linear, offset[:, None]])
        self._reference = self._resample(cv2.cvtColor(frame[self._crop], cv2.COLOR_RGB2GRAY))
        # The mask's edge is repeated too: a person cut by the frame goes on beyond it (where the flow carries
        # the mask in from beyond the edge).
        self._person = self._resample(person[self._crop].astype(np.float32))
        if self._head is not None:
            driver = self._person[:len(self._head)]
            union = max(float(np.maximum(driver, self._head).sum()), 1e-6)
            overlap = float(np.minimum(driver, self._head).sum()) / union
            self.outline_agreement = float(np.clip((overlap - _OTHER_OUTLINE) / (_SAME_OUTLINE - _OTHER_OUTLINE),
                                                   0.0, 1.0))
        # Beyond the frame's edges the resampled frames repeat their edge pixels, in which the flow finds nothing
        # to measure: a repeated row has no texture along it, and propagated from frame to frame such a flow
        # drifts (a framed portrait's chest, far below a close-up driver's frame, slid up by its own height).
        # Near the edges too: DIS measures a cell from patches up to a patch's side away, which there match the
        # repeated pixels (a close-up driver's collar flowed 200 px and folded the portrait's chest). The flow
        # is read only where every patch lies in the frame. Beyond, each cell takes the flow of the nearest cell
        # read, as a body cut by the frame goes on beyond it, fading out over a patch's side past the edge:
        # gently, for a motion that ends sharply folds the picture, and soon, for what lies far beyond the
        # frame was never seen moving.
        inside = cv2.warpAffine(np.ones(self._shrunk[::-1], np.float32), self._matrix, self._size,
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        patch = self._flow.getPatchSize()
        read = cv2.erode((inside >= 1.0 - 1e-3).astype(np.uint8), np.ones((2 * patch + 1, 2 * patch + 1), np.uint8))
        if read.any():
            distance, nearest = _nearest_cells(read)
            self._read_from = nearest, np.clip(2.0 - distance / patch, 0.0, 1.0)  # the reach, smoothed with the flow
        else:
            self._read_from = None
        self._previous = None

    def measure(self, frame: np.ndarray) -> BodyShift:
        """The driver's motion in this driving frame, as a function from points (region pixels, float32 m×2)
        to their shifts (portrait pixels, float32 m×2) and how far the person is seen there (m×1)."""
        if self._reference is None or self._person is None:
            raise RuntimeError("BodyMotion.measure before set_reference")
        # Each frame's flow starts from the previous frame's (DIS's temporal propagation): the flow back to the
        # reference then follows a large motion step by step instead of losing it, and does not jump about.
        current = self._resample(cv2.cvtColor(frame[self._crop], cv2.COLOR_RGB2GRAY))
        flow = self._flow.calc(current, self._reference, self._previous)
        if self._previous is None:
            flow = self._settled(current, flow)
        self._previous = flow.copy()
        if self._read_from is None:  # the frame covers too little of the region to read
            return _still
        nearest, reach = self._read_from
        flow = flow.reshape(-1, 2)[nearest]
        # The person mask travels with the flow: this frame's person is where the reference's came from ...
        sources = self._cells + flow
        person = cv2.remap(self._person, sources, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # ... where the flow explains the frame: what a camera's pan uncovers, or a face that left it, was not in
        # the reference, and a flow there (none, in a flat fill) would hold the portrait's old place still.
        explained = cv2.remap(self._reference, sources, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mismatch = cv2.absdiff(current, explained).astype(np.float32)
        person *= np.clip((_UNEXPLAINED - mismatch) / (_UNEXPLAINED - _EXPLAINED), 0.0, 1.0)
        person *= reach
        flow *= person[..., None]
        sigma = _SMOOTHING * _FLOW_SIDE
        smooth_flow, smooth_person = (cv2.GaussianBlur(image, (0, 0), sigma) for image in (flow, person))

        def displacement(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cells = (points / self._cell).astype(np.float32).reshape(-1, 1, 2)
            moved, share = (cv2.remap(image, cells, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                                      ).reshape(len(points), -1) for image in (smooth_flow, smooth_person))
            return moved * (self._cell / np.maximum(share, _PERSON_FLOOR)), np.minimum(share / _PERSON_FLOOR, 1.0)

        return displacement

    def _settled(self, current: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """The first frame's flow refined from itself until it settles. One pass of DIS falls short of a motion
        far from the reference (a reference picked later in the clip: `--reference best`), which the propagation
        then makes up over the next frames: a portrait's hair smeared for five frames before it caught up."""
        for _ in range(_FIRST_PASSES):
            refined = self._flow.calc(current, self._reference, flow.copy())  # calc writes into its initial flow
            change = float(cv2.norm(refined, flow, cv2.NORM_L1)) / flow.size
            flow = refined
            if change < _SETTLED:
                break
        return flow

    def _resample(self, crop: np.ndarray) -> np.ndarray:
        """A crop of a driving frame (or of its mask) on the flow's cells."""
        if crop.shape[1::-1] != self._shrunk:
            crop = cv2.resize(crop, self._shrunk, interpolation=cv2.INTER_AREA)
        return cv2.warpAffine(crop, self._matrix, self._size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)


def _nearest_cells(read: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each cell of a grid (h×w), the distance (cells) to the nearest cell where `read` is set, and that
    cell's flat index (both h×w)."""
    # The distance transform labels every cell with its nearest zero cell; each zero cell has a label of its own.
    distance, labels = cv2.distanceTransformWithLabels(1 - read, cv2.DIST_L2, cv2.DIST_MASK_5,
                                                       labelType=cv2.DIST_LABEL_PIXEL)
    index_of_label = np.zeros(labels.max() + 1, np.int64)
    index_of_label[labels[read.astype(bool)]] = np.flatnonzero(read)
    return distance, index_of_label[labels]


def _still(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """No motion of the driver's person measured anywhere (`BodyShift`)."""
    return np.zeros((len(points), 2), np.float32), np.zeros((len(points), 1), np.float32)
