"""Sampling the portrait through the warp's map: bicubic over the face, bilinear around it.

Bilinear sampling blends the four pixels around each position the map asks for, so a moving face loses a
quarter of its fine detail (brows, lashes, the lips' lines) against the photo, and gets it back whenever it
stops. Bicubic keeps most of it, at several times the cost per pixel. The face is where a viewer looks and
where the detail is; the rest of the region (hair, body, the edge of the background) keeps the cheaper
sampling, so the cost follows the face's size, not the region's. The face's box gives way to the bilinear
surround over a band of _FEATHER face heights inside its edges (its corners lie beyond the face's oval), so no
edge shows where the sharpness changes.

Both interpolate: where the map holds whole pixels (a still portrait) each copies the photo exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

from vivify.render.patch import Box, feather

# The band over which the bicubic face gives way to the bilinear surround, in face-box heights.
_FEATHER = 0.1


def resample(layers: np.ndarray, source_map: np.ndarray, face_box: Box) -> np.ndarray:
    """`layers` sampled at `source_map` (float32 (h, w, 2): cv2.remap's map1, positions in `layers`): bicubic
    within `face_box` (x0, y0, x1, y1 of the map), giving way to bilinear towards its edges, bilinear beyond."""
    warped = cv2.remap(layers, source_map, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    height, width = source_map.shape[:2]
    x0, y0, x1, y1 = face_box
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return warped
    sharp = cv2.remap(layers, source_map[y0:y1, x0:x1], None, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    weight, inverse = feather((x1 - x0, y1 - y0), max(1, round(_FEATHER * (y1 - y0))))
    face = warped[y0:y1, x0:x1]
    face[:] = cv2.blendLinear(sharp, np.ascontiguousarray(face), weight, inverse)
    return warped
