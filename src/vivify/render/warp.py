"""The head warp: a smooth backward map from output pixels to portrait pixels.

A thin-plate spline through the face's landmarks bends smoothly where a piecewise-affine mesh would crease.
It is anchored by a ring around the head that moves rigidly with the pose (hair, ears), by points on the
neck and chest that follow only a little, and by the border of a region of interest that stays still, so
only the head moves and the neck blends between the two. The spline is evaluated on a coarse grid and
upsampled, so the per-pixel work is one `cv2.remap` of the region of interest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import cv2
import numpy as np

from vivify.landmarks import topology
from vivify.motion.body import BodyShift
from vivify.motion.pose import Similarity, fit_similarity
from vivify.render.patch import Box, feather, smoothstep

# Share of the head's translation that the base of the neck follows.
_NECK_FOLLOW = 0.3
# Around the face the driver's own body motion takes over from the spline over this distance (face heights):
# the face follows its landmarks, the hair and the body beyond follow the driving video's flow.
_BODY_BLEND = 0.15
# Where the body's flow is not followed freely (`maps`' `hair_follows_body` under 1), the hair strays from the
# head's own motion by at most this much (face heights). That holds down to the first of _HAIR_FADE (face
# heights below the eyes), and fades out by the second: the neck and the body follow the driver freely.
_HAIR_STRAY = 0.05
_HAIR_FADE = (0.2, 0.6)
# Smoothing of the spline relative to its bending energy: keeps coincident targets (a closed mouth asked of
# an open one) from blowing up.
_REGULARISATION = 1e-4


@dataclass(frozen=True)
class Region:
    """A rectangle of the portrait: x0, y0 inclusive, x1, y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def size(self) -> tuple[int, int]:
        return self.x1 - self.x0, self.y1 - self.y0


def moving_region(image_size: tuple[int, int], points: np.ndarray, margin: float = 0.0) -> Region:
    """The part of a portrait (width, height) that a face's motion may change: the head with its hair, and the
    neck down to the chest, around the face's landmarks `points`; widened by `margin` face heights all round."""
    width, height = image_size
    left, top = points[:, :2].min(axis=0)
    right, bottom = points[:, :2].max(axis=0)
    face_w, face_h = right - left, bottom - top
    return Region(
        max(0, int(left - 0.9 * face_w - margin * face_h)), max(0, int(top - (0.9 + margin) * face_h)),
        min(width, int(np.ceil(right + 0.9 * face_w + margin * face_h))),
        min(height, int(np.ceil(bottom + (1.2 + margin) * face_h))),
    )


class HeadWarp:
    """Builds the backward map for a portrait face, given each frame's target landmarks and head motion."""

    def __init__(self, image_size: tuple[int, int], points: np.ndarray) -> None:
        height = image_size[1]
        points = np.asarray(points, dtype=np.float64)[:, :2]
        self.points = points
        left, top = points.min(axis=0)
        right, bottom = points.max(axis=0)
        face_w, face_h = right - left, bottom - top
        center = np.array([(left + right) / 2, (top + bottom) / 2])

        self.region = moving_region(image_size, points)
        rw, rh = self.region.size
        # Grid steps: a coarse one for the whole region, a fine one for eyes and mouth.
        self.step = max(4, round(face_h / 12))
        self.fine_step = max(2, round(face_h / 40))
        self._scale = float(max(rw, rh))
        self._face_height = face_h
        self._origin = np.array([self.region.x0, self.region.y0], dtype=np.float64)

        # A ring beyond the upper face oval (further out above, for the hair) that moves with the head; none
        # below the jaw, where the neck must stretch instead. Every other point is enough.
        self._ring_origins = topology.FACE_OVAL[points[topology.FACE_OVAL, 1] < points[1, 1]][::2]
        oval = points[self._ring_origins]
        spread = np.where((oval[:, 1] < center[1])[:, None], 1.45, 1.3)
        self.head_ring = center + (oval - center) * spread
        chin = points[152]
        self.neck = np.array([
            chin + [0.0, 0.55 * face_h], chin + [-0.3 * face_w, 0.5 * face_h], chin + [0.3 * face_w, 0.5 * face_h],
        ])
        border = self._border_points(face_h)
        # Border points too close to the head would pin it; drop them (the head may be near the frame edge).
        # On the frame's bottom edge, below the chin, they are kept closer in: the body is cut there and
        # must not pull away from the edge. Elsewhere the head and hair may leave the frame.
        moving = np.vstack([self.head_ring, points[topology.WARP_CONTROLS]])
        dist = np.min(np.linalg.norm(border[:, None] - moving[None], axis=2), axis=1)
        body_edge = (border[:, 1] >= height - 1) & (border[:, 1] > points[152, 1])
        kept = dist > np.where(body_edge, 0.15, 0.35) * face_h
        self.fixed = border[kept]
        # The fixed points on the body's edge, and each one's column at the chin's height (`controls`).
        self._on_body_edge = body_edge[kept]
        self._body_edge = np.column_stack([self.fixed[self._on_body_edge, 0],
                                           np.full(int(self._on_body_edge.sum()), points[152, 1])])

        self._sources = np.vstack([points[topology.WARP_CONTROLS], self.head_ring, self.neck, self.fixed])
        self._sources.flags.writeable = False  # handed out by `controls` every frame

        gx, gy = _cell_centres(0, rw, self.step), _cell_centres(0, rh, self.step)
        self.grid_shape = (len(gy), len(gx))
        grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
        self._grid = (grid / self._scale).astype(np.float32)
        # Fine cell centres from a box's corner, for the largest box: a smaller box's are its top-left corner.
        fine_x, fine_y = _cell_centres(0, rw, self.fine_step), _cell_centres(0, rh, self.fine_step)
        self._fine_grid = np.stack(np.meshgrid(fine_x, fine_y), axis=-1).astype(np.float32)
        self._evaluate = _SplineEvaluator()
        self._evaluate_beside = _SplineEvaluator()  # its own scratch memory, for a helper thread
        self._taper = self._taper_weights(gx, gy, image_size).reshape(-1, 1).astype(np.float32)

    def _border_points(self, face_h: float) -> np.ndarray:
        """Still points along the region's border, every ~half a face."""
        r = self.region
        xs = np.linspace(r.x0, r.x1 - 1, max(2, int((r.x1 - r.x0) / (face_h / 2)) + 1))
        ys = np.linspace(r.y0, r.y1 - 1, max(2, int((r.y1 - r.y0) / (face_h / 2)) + 1))
        return np.vstack([
            np.stack([xs, np.full_like(xs, r.y0)], 1), np.stack([xs, np.full_like(xs, r.y1 - 1)], 1),
            np.stack([np.full_like(ys, r.x0), ys], 1), np.stack([np.full_like(ys, r.x1 - 1), ys], 1),
        ])

    def _taper_weights(self, gx: np.ndarray, gy: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """1 inside, falling to 0 at region sides that lie inside the frame, so the warp meets the still
        picture without a seam. Sides on the frame's edge are left free."""
        width, height = image_size
        r = self.region
        rw, rh = r.size
        band_x, band_y = 0.12 * rw, 0.12 * rh
        wx = np.ones_like(gx)
        wy = np.ones_like(gy)
        if r.x0 > 0:
            wx = np.minimum(wx, np.clip(gx / band_x, 0, 1))
        if r.x1 < width:
            wx = np.minimum(wx, np.clip((rw - 1 - gx) / band_x, 0, 1))
        if r.y0 > 0:
            wy = np.minimum(wy, np.clip(gy / band_y, 0, 1))
        if r.y1 < height:
            wy = np.minimum(wy, np.clip((rh - 1 - gy) / band_y, 0, 1))
        return smoothstep(wy)[:, None] * smoothstep(wx)[None, :]

    def controls(self, target: np.ndarray, head_motion: Similarity) -> tuple[np.ndarray, np.ndarray]:
        """Where control points go in the output (targets) and where they come from in the portrait."""
        chin_shift = head_motion.apply(self.points[152:153])[0] - self.points[152]
        fixed = self.fixed
        if self._on_body_edge.any():
            # A head that comes down towards the body's edge (leaning in, nodding, rolling) pushes the edge below
            # it down as far as its motion at the chin's height there: pinned, the jaw folded against it and
            # pulled the collar into the chin. A head that rises leaves it pinned (the body must not pull away).
            fixed = fixed.copy()
            fixed[self._on_body_edge, 1] += np.maximum(
                head_motion.apply(self._body_edge)[:, 1] - self._body_edge[:, 1], 0.0)
        targets = np.vstack([
            target[topology.WARP_CONTROLS], head_motion.apply(self.head_ring) + self._turn(target, head_motion),
            self.neck + _NECK_FOLLOW * chin_shift, fixed,
        ])
        return targets, self._sources

    def _turn(self, target: np.ndarray, head_motion: Similarity) -> np.ndarray:
        """How far each hair control follows a head turn, beyond the rigid pose.

        A turn moves the sides of the face oval one way along the eye line, the far side most; the hair beside
        them goes along (otherwise the cheek is pulled in under still hair, a notch). Each control takes its
        oval point's shift, held between 0 and twice the shift that the points share: a smile or a wide mouth
        moves the sides apart and moves no hair. Only along the eye line: a raised brow also lifts the upper
        oval, and the hair does not rise with it.
        """
        eye_line = topology.eye_line(target)
        shift = target[self._ring_origins, :2] - head_motion.apply(self.points[self._ring_origins])
        along = shift @ eye_line
        shared = 2.0 * float(along.mean())
        return np.outer(np.clip(along, min(0.0, shared), max(0.0, shared)), eye_line)

    def maps(self, target: np.ndarray, head_motion: Similarity, source_offset: float = 0.0,
             driving: Sequence[np.ndarray] = (), body: BodyShift | None = None, helper: Executor | None = None,
             hair_follows_body: float = 1.0) -> tuple[np.ndarray, Box, Callable[[], list[np.ndarray]]]:
        """Backward maps for this frame (float32 (h, w, 2), x then y: cv2.remap's map1).

        `body`, where given, gives the driver's motion around the face at region points (m×2 float32 in; portrait
        pixels and how far the driver's person is seen there, 0..1 (m×1), out: the function that
        `BodyMotion.measure` returns): beyond the face it replaces the spline, which knows only the face and the
        head's pose, as far as the person is seen. `hair_follows_body` (0..1) is how far the hair may follow that
        motion where it strays from the head's (`_hold_hair`): 1 where the driver's outline around the head is
        the portrait's own, 0 where it is another's. `helper`, where given, is a thread that works out half of the
        spline's points while this one works out the rest (the caller's other core is free).

        Returns the map of the whole region into the portrait (shifted by `source_offset` when the portrait
        is sampled from a padded copy), the face's box (region pixels) and a function that assembles, for each
        landmark set in `driving`, the map of the face box into the frame those landmarks belong to (called
        where it is needed: in another thread, while the portrait map is used). All maps come from one spline
        system and one evaluation: the control points are the same, only the values differ.
        """
        targets, sources = self.controls(target, head_motion)
        face_controls = target[topology.WARP_CONTROLS, :2]
        value_sets = [sources] + [_follow(face_controls, points[topology.WARP_CONTROLS, :2], targets)
                                  for points in driving]
        centers = ((targets - self._origin) / self._scale).astype(np.float32)
        # Displacements, so that the identity is exact far away.
        coeffs = _solve_tps(centers, np.hstack([(values - targets) / self._scale for values in value_sets]))
        # Eyes and mouth bend sharply: their maps are recomputed on a fine grid and pasted over the coarse
        # one. All points go through the spline in one evaluation.
        fine_boxes = self._detail_boxes(target)
        fine_grids = [self._fine_grid[:_cell_count(y1 - y0, self.fine_step), :_cell_count(x1 - x0, self.fine_step)]
                      for x0, y0, x1, y1 in fine_boxes]
        points = np.vstack([self._grid, *((grid.reshape(-1, 2) + np.float32([x0, y0])) * np.float32(1 / self._scale)
                                          for grid, (x0, y0, _, _) in zip(fine_grids, fine_boxes, strict=True))])
        face_box = self._face_box(target)
        if body is None:
            displacement = self._evaluate_shared(points, centers, coeffs, helper)
        else:
            # Where the body's motion alone rules, the spline is not needed: it is evaluated around the face
            # only, and over the face's box, where the driving maps are read.
            region_points = points * self._scale
            weight = self._body_weight(target, region_points)
            x0, y0, x1, y1 = face_box
            px, py = region_points[:, 0], region_points[:, 1]
            in_box = (px >= x0 - self.step) & (px <= x1 + self.step) & (py >= y0 - self.step) & (py <= y1 + self.step)
            moving = weight[:, 0] > 0.0
            shift, seen = body(region_points[moving])
            if hair_follows_body < 1.0:
                shift = self._hold_hair(shift, region_points[moving], target, head_motion, hair_follows_body)
            # Where the flow sees no person of the driver's (beyond the driver's outline, or where the frame
            # shows what the reference did not), the spline rules: the head's motion, fading out to the border.
            weight[moving] *= seen
            needed = (weight[:, 0] < 1.0) | in_box
            displacement = np.zeros((len(points), 2 * len(value_sets)), np.float32)
            displacement[needed] = self._evaluate_shared(points[needed], centers, coeffs, helper)
            own = displacement[moving, :2]
            own += weight[moving] * (shift / self._scale - own)
            displacement[moving, :2] = own
        displacement[: len(self._grid), :2] *= self._taper
        # Bilinear upsampling reproduces the identity exactly, so absolute positions are upsampled
        # directly and no full-resolution arithmetic is left.
        layout = (fine_boxes, fine_grids)
        rw, rh = self.region.size
        origin = self._origin.astype(np.float32)
        portrait_positions = (displacement[:, :2] + points) * self._scale + (origin + source_offset)
        portrait_map = self._assemble(portrait_positions, layout, (0, 0, rw, rh))

        def driving_maps() -> list[np.ndarray]:
            return [self._assemble((displacement[:, 2 * k:2 * k + 2] + points) * self._scale + origin, layout, face_box)
                    for k in range(1, len(value_sets))]

        return portrait_map, face_box, driving_maps

    def _evaluate_shared(self, points: np.ndarray, centers: np.ndarray, coeffs: np.ndarray,
                         helper: Executor | None) -> np.ndarray:
        """The spline at `points`; with a helper thread, its first half there while the rest is worked out here."""
        if helper is None:
            return self._evaluate(points, centers, coeffs)
        half = len(points) // 2
        first = helper.submit(self._evaluate_beside, points[:half], centers, coeffs)
        rest = self._evaluate(points[half:], centers, coeffs)
        return np.vstack([first.result(), rest])

    def _assemble(self, positions: np.ndarray, layout: tuple[list[Box], list[np.ndarray]],
                  box: Box) -> np.ndarray:
        """The map over `box` (region pixels) from positions at the coarse grid, then at each fine grid."""
        x0, y0, x1, y1 = box
        rows, cols = self.grid_shape
        # Coarse cells i have centres at (i - 1)·step + (step - 1)/2; upsampling from cell i0 puts region
        # pixel x at (x - (i0 - 1)·step) of the upsampled block.
        i0, j0 = y0 // self.step, x0 // self.step
        i1 = min(rows, -(-(y1 - (i0 - 1) * self.step) // self.step) + 1 + i0)
        j1 = min(cols, -(-(x1 - (j0 - 1) * self.step) // self.step) + 1 + j0)
        coarse = positions[: rows * cols].reshape(rows, cols, 2)[i0:i1, j0:j1]
        full = cv2.resize(coarse, ((j1 - j0) * self.step, (i1 - i0) * self.step), interpolation=cv2.INTER_LINEAR)
        oy, ox = y0 - (i0 - 1) * self.step, x0 - (j0 - 1) * self.step
        source_map = full[oy:oy + y1 - y0, ox:ox + x1 - x0]  # a view: cv2.remap takes row-strided maps
        start = rows * cols
        for (fx0, fy0, fx1, fy1), grid in zip(*layout, strict=True):
            fine = positions[start:start + grid.shape[0] * grid.shape[1]].reshape(grid.shape)
            start += grid.shape[0] * grid.shape[1]
            ix0, iy0, ix1, iy1 = max(fx0, x0), max(fy0, y0), min(fx1, x1), min(fy1, y1)
            if ix1 > ix0 and iy1 > iy0:
                upsampled = _upsample(fine, self.fine_step, (fx1 - fx0, fy1 - fy0))
                inside = (slice(iy0 - fy0, iy1 - fy0), slice(ix0 - fx0, ix1 - fx0))
                # Feathered in over the box's margin: where the warp bends hard at the box's edge (a turn pulls
                # the cheek in beside the eye) the coarse map differs from the fine one, and a plain paste
                # would show the box as a seam.
                fine_weight, coarse_weight = feather((fx1 - fx0, fy1 - fy0), 2 * self.fine_step)
                covered = source_map[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
                covered[:] = cv2.blendLinear(upsampled[inside], covered, fine_weight[inside], coarse_weight[inside])
        return source_map

    def _hold_hair(self, shift: np.ndarray, points: np.ndarray, target: np.ndarray, head_motion: Similarity,
                   freedom: float) -> np.ndarray:
        """The body's shifts (portrait pixels) at `points` (region pixels), those of the hair (above the eyes,
        fading out below them over _HAIR_FADE) held to within _HAIR_STRAY of the head's own motion, except for
        `freedom` (0..1) of what they stray beyond it.

        The flow around the head is the driver's: where the portrait's hair reaches beyond the driver's outline,
        or lies where the driver has none, it is read off the edge of another shape. Followed there, a strong
        roll drew a horn on top of the hair (Mona Lisa driven by tpsmm_driving), a turn a wave down its side.
        """
        left, right = target[topology.LEFT_EYE.corners[0], :2], target[topology.RIGHT_EYE.corners[1], :2]
        eye_line = topology.eye_line(target)
        down = np.array([-eye_line[1], eye_line[0]]) / self._face_height
        start, end = _HAIR_FADE
        below_eyes = (points @ down.astype(np.float32)) + float((self._origin - 0.5 * (left + right)) @ down)
        held = 1.0 - smoothstep(np.clip((below_eyes - start) / (end - start), 0.0, 1.0))
        # What the head's motion alone would shift them by: back through it, less where they are.
        back = head_motion.inverse()
        at_head = points @ (back.linear.T - np.eye(2)).astype(np.float32) + (
            back.apply(self._origin) - self._origin).astype(np.float32)
        stray = shift - at_head
        kept = np.minimum(1.0, _HAIR_STRAY * self._face_height / np.maximum(np.hypot(*stray.T), 1e-6))
        return shift - stray * (held * (1.0 - freedom) * (1.0 - kept))[:, None]

    def _body_weight(self, target: np.ndarray, points: np.ndarray) -> np.ndarray:
        """At `points` (region pixels; m×1): 0 on the target's face, rising smoothly to 1 at _BODY_BLEND beyond."""
        # The face oval is drawn and its distance measured at the coarse grid, and read between grid points by
        # interpolation.
        face = np.full(self.grid_shape, 255, np.uint8)
        oval = _cell_index(target[topology.FACE_OVAL, :2] - self._origin, self.step).astype(np.float32)
        cv2.fillConvexPoly(face, np.round(cv2.convexHull(oval) * 16).astype(np.int32), 0, shift=4)
        distance = cv2.distanceTransform(face, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        at = _cell_index(points, self.step).astype(np.float32).reshape(-1, 1, 2)
        distance = cv2.remap(distance, at, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 1)
        return smoothstep(np.clip(distance * (self.step / (_BODY_BLEND * self._face_height)), 0.0, 1.0))

    def _face_box(self, target: np.ndarray) -> Box:
        """The box (region pixels) of the target's face oval."""
        rw, rh = self.region.size
        pts = target[topology.FACE_OVAL, :2] - self._origin
        x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int) + 1, [rw, rh])
        return int(x0), int(y0), int(max(x1, x0 + 1)), int(max(y1, y0 + 1))

    def _detail_boxes(self, target: np.ndarray) -> list[Box]:
        """Boxes (region pixels) around the target's eyes with brows, and mouth with chin travel."""
        rw, rh = self.region.size
        # All features at once: a handful of small NumPy calls instead of a dozen per feature.
        pts = target[_DETAIL_INDICES, :2] - self._origin
        lo, hi = np.minimum.reduceat(pts, _DETAIL_STARTS), np.maximum.reduceat(pts, _DETAIL_STARTS)
        pad = _DETAIL_MARGINS * (hi - lo) + self.fine_step
        corners = np.hstack([np.maximum(np.floor(lo - pad), 0), np.minimum(np.ceil(hi + pad), [rw, rh])])
        corners = corners.astype(int).tolist()
        return [(x0, y0, x1, y1) for x0, y0, x1, y1 in corners if x1 > x0 and y1 > y0]


def _follow(face_targets: np.ndarray, face_sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Sources for all controls when only the face's are known (a driving frame): the rest follow the face
    rigidly (least-squares similarity); only the face region is looked up through such a map anyway."""
    values = fit_similarity(face_targets, face_sources).apply(targets)
    values[: len(face_sources)] = face_sources
    return values


# The features with a fine grid (eyes with their brows, the mouth), with the margin around each (its size's
# share), as one index array in segments.
_DETAIL_FEATURES = (
    (np.concatenate([topology.LEFT_EYE.contour, topology.LEFT_BROW]), 0.15),
    (np.concatenate([topology.RIGHT_EYE.contour, topology.RIGHT_BROW]), 0.15),
    (topology.LIPS_OUTER, 0.3),
)
_DETAIL_INDICES = np.concatenate([indices for indices, _ in _DETAIL_FEATURES])
_DETAIL_STARTS = np.cumsum([0] + [len(indices) for indices, _ in _DETAIL_FEATURES[:-1]])
_DETAIL_MARGINS = np.array([[margin] for _, margin in _DETAIL_FEATURES])


# The floor on squared distances: the kernel's logarithm needs a positive argument. At a control point itself
# U is 0, as U(1e-12) is to float precision.
_MIN_SQUARED_DISTANCE = 1e-12


def _tps_kernel(d2: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The thin-plate kernel U(r) = r² log r² on squared distances (float32, floored at _MIN_SQUARED_DISTANCE),
    into `out` where given. OpenCV's logarithm takes a third of the time of NumPy's double one."""
    out = cv2.log(d2, out)
    return np.multiply(out, d2, out=out)


def _solve_tps(centers: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Coefficients (n + 3, 2) of the thin-plate spline through `values` at `centers`."""
    c = centers.astype(np.float64)
    n = len(c)
    sq = (c * c).sum(axis=1)
    # The kernel in single precision like the evaluation; the system is solved in double (the maps move ~0.01 px
    # against a kernel in double).
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (c @ c.T), _MIN_SQUARED_DISTANCE).astype(np.float32)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_kernel(d2)
    system.flat[: n * (n + 4): n + 4] += _REGULARISATION  # the diagonal of the n×n kernel block
    system[:n, n] = 1.0
    system[:n, n + 1:] = c
    system[n, :n] = 1.0
    system[n + 1:, :n] = c.T
    rhs = np.zeros((n + 3, values.shape[1]))
    rhs[:n] = values
    return np.linalg.solve(system, rhs).astype(np.float32)


class _SplineEvaluator:
    """Evaluates splines at many points, reusing its scratch memory from frame to frame: fresh arrays of
    this size cost more in page faults than the arithmetic does."""

    def __init__(self) -> None:
        self._buffers = (np.empty(0, np.float32), np.empty(0, np.float32), np.empty(0, np.float32))

    def __call__(self, points: np.ndarray, centers: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        """The spline at `points` (float32, m × 2)."""
        m, n = len(points), len(centers)
        if self._buffers[0].size < m * n or self._buffers[2].size < m * 4:
            self._buffers = (np.empty(m * n, np.float32), np.empty(m * n, np.float32), np.empty(m * 4, np.float32))
        d2 = self._buffers[0][: m * n].reshape(m, n)
        work = self._buffers[1][: m * n].reshape(m, n)
        # |p − c|² = |p|² + |c|² − 2 p·c as one matrix product, (p, 1, |p|²) by (−2c, |c|², 1): a third of the
        # time of a product and two broadcast sums over the whole table.
        lifted = self._buffers[2][: m * 4].reshape(m, 4)
        lifted[:, :2] = points
        lifted[:, 2] = 1.0
        np.einsum("ij,ij->i", points, points, out=lifted[:, 3])
        across = np.empty((4, n), np.float32)
        np.multiply(centers.T, np.float32(-2.0), out=across[:2])
        np.einsum("ij,ij->i", centers, centers, out=across[2])
        across[3] = 1.0
        np.matmul(lifted, across, out=d2)
        cv2.max(d2, _MIN_SQUARED_DISTANCE, dst=d2)  # NumPy's maximum takes four times as long
        _tps_kernel(d2, out=work)
        return work @ coeffs[:n] + (points @ coeffs[n + 1:] + coeffs[n])


def _cell_centres(start: int, stop: int, step: int) -> np.ndarray:
    """Centres of `step`-pixel cells covering [start, stop), with one more cell on each side so that
    upsampling interpolates all the way to the edges instead of clamping."""
    return start + (np.arange(_cell_count(stop - start, step)) - 1) * step + (step - 1) / 2


def _cell_index(position: np.ndarray, step: int) -> np.ndarray:
    """Where pixel positions lie among the `_cell_centres` from 0, in (fractional) cell indices: the inverse of
    index i ↦ (i − 1)·step + (step − 1)/2."""
    return (position - (step - 1) / 2) / step + 1


def _cell_count(length: int, step: int) -> int:
    """How many `_cell_centres` cover `length` pixels."""
    return -(-length // step) + 2


def _upsample(grid: np.ndarray, step: int, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of values at the `_cell_centres`, to the pixels of the covered range (`size`)."""
    rows, cols = grid.shape[:2]
    width, height = size
    full = cv2.resize(grid, (cols * step, rows * step), interpolation=cv2.INTER_LINEAR)
    return full[step:step + height, step:step + width]
