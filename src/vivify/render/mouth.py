"""The mouth interior: what a portrait with a closed mouth cannot show when the driver opens wide.

The driving frame's own mouth (teeth, tongue, cavity) is mapped into the target's inner-lip polygon by the
affine that best carries the driver's lips onto the target's, recoloured to the portrait (mean and spread
in Lab, measured on the lips around it and smoothed over time so it does not flicker) and blended in with
a feathered mask. Without a usable driving mouth a synthetic cavity with a row of teeth stands in.
"""

from __future__ import annotations

import cv2
import numpy as np

from vivify.landmarks import topology

_LIPS = np.concatenate([topology.LIPS_OUTER, topology.LIPS_INNER])
# Interior appears as the target's gap exceeds the portrait's own by this much (inter-ocular units) ...
_GAP_START = 0.01
# ... and is fully in once it exceeds it by this much more.
_GAP_RAMP = 0.05
# Smaller driving mouths (inner gap in px) carry too little detail; the synthetic cavity is used instead.
_MIN_DRIVING_GAP = 3.0
# Exponential smoothing of the colour transfer across frames.
_COLOUR_MEMORY = 0.8


class MouthInterior:
    def __init__(self, portrait: np.ndarray, points: np.ndarray) -> None:
        self._own_gap = topology.mouth_gap(points) / topology.inter_ocular(points)
        self._colour: tuple[np.ndarray, np.ndarray] | None = None

    def paint(self, out: np.ndarray, target: np.ndarray, frame: np.ndarray, driving: np.ndarray | None) -> None:
        """Blend a mouth interior into `out` (in place) inside the target's inner lips."""
        target_gap = topology.mouth_gap(target) / topology.inter_ocular(target)
        # Needed where the warp would have to invent what the portrait does not show ...
        needed = _ramp(target_gap - self._own_gap)
        # ... and wanted where the driver's open mouth shows a real one (teeth, tongue) to carry over.
        usable = driving is not None and topology.mouth_gap(driving) >= _MIN_DRIVING_GAP
        shown = _ramp(topology.mouth_gap(driving) / topology.inter_ocular(driving)) if usable else 0.0
        strength = max(needed, min(shown, _ramp(target_gap)))
        if strength <= 0:
            return
        unit = topology.inter_ocular(target)
        height, width = out.shape[:2]
        inner = target[topology.LIPS_INNER, :2]
        lips = target[_LIPS, :2]
        x0, y0 = np.maximum(np.floor(lips.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(lips.max(axis=0)).astype(int) + 3, [width, height])
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        box = out[y0:y1, x0:x1]
        offset = np.array([x0, y0], dtype=np.float64)

        if usable:
            patch = self._driving_patch(frame, driving[_LIPS, :2], lips - offset, (x1 - x0, y1 - y0))
            patch = self._recolour(patch, box, lips - offset, inner - offset)
        else:
            patch = _synthetic_cavity(inner - offset, (x1 - x0, y1 - y0))

        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(mask, [np.round(inner - offset).astype(np.int32)], 1.0)
        feather = max(1, int(unit * 0.015)) * 2 + 1
        mask = cv2.GaussianBlur(mask, (feather, feather), 0) * strength
        box[:] = cv2.blendLinear(patch, np.ascontiguousarray(box), mask, 1.0 - mask)

    @staticmethod
    def _driving_patch(frame: np.ndarray, source_lips: np.ndarray, target_lips: np.ndarray,
                       size: tuple[int, int]) -> np.ndarray:
        """The driving mouth, carried onto the target lips by a least-squares affine."""
        design = np.hstack([source_lips, np.ones((len(source_lips), 1))])
        affine, *_ = np.linalg.lstsq(design, target_lips, rcond=None)
        return cv2.warpAffine(frame, affine.T, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def _recolour(self, patch: np.ndarray, box: np.ndarray, lips: np.ndarray, inner: np.ndarray) -> np.ndarray:
        """Match the driver's lips (and so the interior) to the portrait's lips in Lab mean and spread."""
        ring = np.zeros(box.shape[:2], np.uint8)
        cv2.fillPoly(ring, [np.round(lips[: len(topology.LIPS_OUTER)]).astype(np.int32)], 1)
        cv2.fillPoly(ring, [np.round(inner).astype(np.int32)], 0)
        if ring.sum() < 10:
            return patch
        lab_patch = cv2.cvtColor(patch, cv2.COLOR_RGB2LAB).astype(np.float32)
        lab_box = cv2.cvtColor(box, cv2.COLOR_RGB2LAB)
        src_mean, src_std = cv2.meanStdDev(lab_patch, mask=ring)
        dst_mean, dst_std = cv2.meanStdDev(lab_box, mask=ring)
        # Lightness keeps some contrast (teeth against cavity); chroma may vanish (a black-and-white photo).
        gain = np.clip(dst_std / np.maximum(src_std, 1.0), [[0.6], [0.0], [0.0]], 1.6).ravel()
        shift = dst_mean.ravel() - gain * src_mean.ravel()
        if self._colour is not None:
            gain = _COLOUR_MEMORY * self._colour[0] + (1 - _COLOUR_MEMORY) * gain
            shift = _COLOUR_MEMORY * self._colour[1] + (1 - _COLOUR_MEMORY) * shift
        self._colour = (gain, shift)
        lab_patch = lab_patch * gain.astype(np.float32) + shift.astype(np.float32)
        return cv2.cvtColor(np.clip(lab_patch, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _ramp(gap: float) -> float:
    """0 up to _GAP_START, rising to 1 over _GAP_RAMP (gaps in inter-ocular units)."""
    return float(np.clip((gap - _GAP_START) / _GAP_RAMP, 0.0, 1.0))


def _synthetic_cavity(inner: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A dark cavity, lighter towards the lips, with a band of upper teeth."""
    width, height = size
    patch = np.empty((height, width, 3), np.uint8)
    patch[:] = (52, 18, 20)
    top = inner[:, 1].min()
    bottom = inner[:, 1].max()
    teeth_bottom = round(top + 0.28 * (bottom - top))
    patch[: max(0, teeth_bottom)] = (226, 220, 208)
    return cv2.GaussianBlur(patch, (3, 3), 0)
