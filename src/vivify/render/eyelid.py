"""Blinks: eyelids closed further than the head warp can draw them.

The head warp is a smooth spline evaluated on a grid of a few pixels. Asked to bring the upper lid down onto
the lower one, it must fold the eye's whole opening into a band of no height, and on that grid it draws a
blurred, shifted, enlarged eye instead of a closed lid. So the closing is split in two:

- `limit_lid_travel` lets the warp close each eye by no more than a share of the portrait's own opening,
  which it draws well (a squeeze of the eye, no fold);
- `EyelidPainter` draws the rest at full resolution after the warp: per column of the eye, it slides the
  upper lid's skin down from the crease so that the lid margin, with its lashes, arrives at the target's lid
  line, and leaves what lies below that line as the warp drew it.

Both work in each eye's own frame (x along the line through its corners, y across it, pointing down the
face), so a rolled head is handled like an upright one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vivify.landmarks import topology
from vivify.render.patch import blend_into

# The warp keeps at least this share of the portrait's own eye opening: it closes an eye by at most 30%.
# The warp's fine grid has a step of a fortieth of the face's height (5 px at 512 px, for an opening of
# ~11 px): a 30% squeeze is a compression it draws cleanly. Squeezed to half the opening or less, the
# iris is flattened over two grid cells and slips off-centre, and sclera pushed below the lower lid's
# landmarks shows as a white rim under the painted lid.
KEEP_OPENING = 0.7
# The sliding band reaches this far from the upper lid up to the brow's lower edge. The first half above
# the lid is mostly the lid's shadow and lashes; the skin that can be stretched over the eye lies above.
_CREASE = 0.8
# The lid's margin, lashes and shadow (eye widths), slides down whole instead of being stretched into a
# long dark gradient.
_MARGIN = 0.12
# Above the margin the band is at least this much of the lid's drop high: its stretch then stays monotonic
# (no fold) however far the lid comes down (the smoothstep's steepest slope is 1.5).
_MIN_BAND = 0.6
# Smaller drops (px) are not worth drawing.
_MIN_DROP = 0.25


@dataclass(frozen=True)
class _Frame:
    """An eye's frame: origin at its first corner, `along` towards the second, `down` across the eye."""

    origin: np.ndarray
    along: np.ndarray
    down: np.ndarray
    width: float

    @classmethod
    def of(cls, points: np.ndarray, eye: topology.Eye) -> _Frame:
        first, second = points[eye.corners[0], :2], points[eye.corners[1], :2]
        axis = second - first
        width = max(float(np.hypot(*axis)), 1e-6)
        along = axis / width
        return cls(first.astype(np.float64), along, np.array([-along[1], along[0]]), width)

    def coords(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) of points (n × ≥2) in pixels of this frame."""
        offset = points[..., :2] - self.origin
        return offset @ self.along, offset @ self.down


def limit_lid_travel(target: np.ndarray, portrait: np.ndarray, keep: float = KEEP_OPENING) -> np.ndarray:
    """The target landmarks (478×2 or ×3, portrait pixels) with each eye closed by the warp no more than it
    can draw: every pair of lid points keeps at least `keep` of the portrait's own opening there (measured
    across the eye, in eye widths, so head roll and scale do not matter).

    Upper-lid points are raised (across the eye) to that opening. The eye's iris points are raised as much
    as the lid above them, but no higher than (1 - `keep`) of the opening below where the portrait has them
    (and never lowered): the iris, brought down whole, keeps its height and the warp does not fold it
    either. An eye opened at least `keep` as wide as the portrait's is left as it is, and so is the rest of
    the face. Returns a copy.
    """
    out = np.array(target, dtype=np.float64, copy=True)
    for eye in topology.EYES:
        # Upper lid, lower lid and iris, in eye widths of each eye's own frame.
        own_frame, frame = _Frame.of(portrait, eye), _Frame.of(out, eye)
        lids_and_iris = np.concatenate([eye.upper, eye.lower, eye.iris])
        own_u, own_v = own_frame.coords(portrait[lids_and_iris])
        u, v = frame.coords(out[lids_and_iris])
        own_u, own_v, u, v = own_u / own_frame.width, own_v / own_frame.width, u / frame.width, v / frame.width
        pairs = len(eye.upper)
        own_opening = np.maximum(own_v[pairs:2 * pairs] - own_v[:pairs], 0.0)
        lift = np.maximum(keep * own_opening - (v[pairs:2 * pairs] - v[:pairs]), 0.0)
        if not lift.any():
            continue
        out[eye.upper, :2] -= (lift * frame.width)[:, None] * frame.down

        # The iris: raised as much as the lid above it, down to a drop of (1 - keep) of the own opening.
        order, own_order = np.argsort(u[:pairs]), np.argsort(own_u[:pairs])
        iris_lift = np.interp(u[2 * pairs:], _nodes(u[:pairs][order]), _ends(lift[order], 0.0))
        allowed = (1.0 - keep) * np.interp(own_u[2 * pairs:], _nodes(own_u[:pairs][own_order]),
                                           _ends(own_opening[own_order], 0.0))
        drop = v[2 * pairs:] - own_v[2 * pairs:]  # positive down
        limited = np.minimum(drop, np.maximum(allowed, drop - iris_lift))
        out[eye.iris, :2] -= ((drop - limited) * frame.width)[:, None] * frame.down
    return out


def _nodes(u: np.ndarray) -> np.ndarray:
    """Lid points' positions along the eye (eye widths, increasing) with the corners, 0 and 1, around them."""
    nodes = _ends(u, 0.0, 1.0)
    np.clip(nodes, 0.0, 1.0, out=nodes)
    return nodes


def _ends(values: np.ndarray, first: float, last: float | None = None) -> np.ndarray:
    """`values` with `first` before them and `last` (or `first` again) after."""
    out = np.empty(len(values) + 2)
    out[0], out[1:-1], out[-1] = first, values, first if last is None else last
    return out


class EyelidPainter:
    """Draws upper lids lower than the warp drew them, for the portrait whose landmarks are `points`.

    >>> painter = EyelidPainter(points)
    >>> limited = limit_lid_travel(target, points)       # warp the portrait with these ...
    >>> painter.paint(frame, target, limited)             # ... then close the lids the rest of the way
    """

    def __init__(self, points: np.ndarray) -> None:
        points = np.asarray(points, dtype=np.float64)
        # Per eye and point of the upper lid (corners included), the height of the sliding band in eye
        # widths: from the lid up to the crease, a share of the way to the brow's lower edge.
        self._bands = []
        for eye in topology.EYES:
            frame = _Frame.of(points, eye)
            u_lid, v_lid = frame.coords(points[eye.upper_lid])
            u_brow, v_brow = frame.coords(points[eye.brow])
            order = np.argsort(u_brow)
            to_brow = v_lid - np.interp(u_lid, u_brow[order], v_brow[order])
            # A brow the detector puts on the lid (or none above it) must not make the band vanish.
            self._bands.append(np.maximum(_CREASE * to_brow, 0.1 * frame.width) / frame.width)

    def paint(self, out: np.ndarray, target: np.ndarray, warped: np.ndarray) -> None:
        """Slide the upper lids of `out` (RGB uint8, drawn by the warp at the `warped` landmarks) down to the
        `target`'s, in place. Only a box around each eye whose lid comes down is touched."""
        target = np.asarray(target, dtype=np.float64)
        warped = np.asarray(warped, dtype=np.float64)
        for eye, band in zip(topology.EYES, self._bands, strict=True):
            _slide_lid(out, target, warped, eye, band)


def _slide_lid(out: np.ndarray, target: np.ndarray, warped: np.ndarray, eye: topology.Eye, band: np.ndarray) -> None:
    frame = _Frame.of(target, eye)
    # The upper lid's margin from corner to corner, where the target has it and where the warp drew it.
    u, v = frame.coords(np.concatenate([target[eye.upper_lid], warped[eye.upper_lid], target[eye.lower]]))
    count = len(eye.upper_lid)
    u_target, v_target, u_warped, v_warped = u[:count], v[:count], u[count:2 * count], v[count:2 * count]
    # A lid asked below the lower lid stops on it.
    np.minimum(v_target[1:-1], v[2 * count:], out=v_target[1:-1])
    order = np.argsort(u_warped)
    # The lid's drop at the target's nodes, nothing at the corners.
    drops = v_target - np.interp(u_target, u_warped[order], v_warped[order])
    drops[[0, -1]] = 0.0
    np.maximum(drops, 0.0, out=drops)
    if drops.max() < _MIN_DROP:
        return
    order = np.argsort(u_target)
    u_target, v_target, drops, band = u_target[order], v_target[order], drops[order], band[order]
    # Per node, the band's height above the warped lid (up to the crease), high enough for the stretch
    # between its top and the margin to stay monotonic (the smoothstep's steepest slope is 1.5) and to leave
    # a pixel at least between them.
    margin = _MARGIN * frame.width
    bands = np.maximum(band * frame.width, margin + _MIN_BAND * drops + 1.0)
    tops = v_target - drops - bands

    # The box (image pixels) around the band, over the eye's columns. The band's top is piecewise linear
    # between the nodes: its highest point is one of them.
    u0, u1 = float(u_target[0]), float(u_target[-1])
    v0, v1 = float(tops.min()) - 1.0, float(v_target.max()) + 1.0
    (ax, ay), (dx, dy), (ox, oy) = frame.along.tolist(), frame.down.tolist(), frame.origin.tolist()
    xs = [ox + a * ax + b * dx for a in (u0, u1) for b in (v0, v1)]
    ys = [oy + a * ay + b * dy for a in (u0, u1) for b in (v0, v1)]
    height, width = out.shape[:2]
    x0, y0 = max(int(np.floor(min(xs))), 0), max(int(np.floor(min(ys))), 0)
    x1, y1 = min(int(np.ceil(max(xs))) + 1, width), min(int(np.ceil(max(ys))) + 1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return

    # Each pixel in eye coordinates, and at its column the lid line, the drop and the band's top.
    column = np.arange(x0, x1, dtype=np.float64)[None, :] - ox
    row = np.arange(y0, y1, dtype=np.float64)[:, None] - oy
    u = column * ax + row * ay
    v = column * dx + row * dy
    line = np.interp(u, u_target, v_target)
    drop = np.interp(u, u_target, drops, left=0.0, right=0.0)
    top = np.interp(u, u_target, tops)
    # A smoothstep from the band's top to the margin: nothing moves at the top (no seam), the skin between
    # stretches, and the margin with its lashes moves down whole onto the target's lid line. The margin
    # lies a pixel or more below the band's top.
    t = v - top
    t /= line - margin - top
    np.clip(t, 0.0, 1.0, out=t)
    shift = drop * (t * t * (3.0 - 2.0 * t))
    map_x = (column + (ox - x0) - shift * dx).astype(np.float32)
    map_y = (row + (oy - y0) - shift * dy).astype(np.float32)
    box = out[y0:y1, x0:x1]
    moved = cv2.remap(box, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # What lies below the target's lid line stays; the pixel the line crosses takes its share of the lid.
    cover = line - v
    cover += 0.5
    np.clip(cover, 0.0, 1.0, out=cover)
    cover[drop <= 0] = 0.0
    cover = cover.astype(np.float32)
    blend_into(box, moved, cover)
