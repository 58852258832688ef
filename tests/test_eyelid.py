"""Blinks: the warp closes an eye only part of the way, the eyelid painter draws the rest at full resolution."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vivify.demo import face_crop
from vivify.landmarks import topology
from vivify.landmarks.facemesh import detect_faces
from vivify.motion.pose import Similarity
from vivify.render.eyelid import KEEP_OPENING, EyelidPainter, limit_lid_travel
from vivify.render.warp import HeadWarp

# Per eye: corners, upper lid and lower lid (paired index by index), iris points, lower edge of the brow.
EYES = {
    "left": ((33, 133), [246, 161, 160, 159, 158, 157, 173], [7, 163, 144, 145, 153, 154, 155],
             list(range(468, 473)), [46, 53, 52, 65, 55], topology.LEFT_EYE.contour),
    "right": ((362, 263), [398, 384, 385, 386, 387, 388, 466], [382, 381, 380, 374, 373, 390, 249],
              list(range(473, 478)), [285, 295, 282, 283, 276], topology.RIGHT_EYE.contour),
}


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return face_crop(512)


@pytest.fixture(scope="module")
def points(portrait) -> np.ndarray:
    faces = detect_faces(portrait)
    assert faces
    return faces[0]


def across(points: np.ndarray, corners: tuple[int, int], indices) -> np.ndarray:
    """Distance of points below the line through an eye's corners (px)."""
    first, second = points[corners[0], :2], points[corners[1], :2]
    axis = (second - first) / np.linalg.norm(second - first)
    return (points[indices, :2] - first) @ np.array([-axis[1], axis[0]])


def line_at(xs: np.ndarray, points: np.ndarray, indices) -> np.ndarray:
    """Height (y) of the polyline through `points[indices]` at each x."""
    order = np.argsort(points[indices, 0])
    return np.interp(xs, points[indices, 0][order], points[indices, 1][order])


def closing(points: np.ndarray, amount: float) -> np.ndarray:
    """Target landmarks with each upper lid brought `amount` of the way down onto the lower lid, and the
    iris points as far down towards the lower lid's line (a full blink: all of it)."""
    target = points.copy()
    for _, upper, lower, iris, _, _ in EYES.values():
        target[upper, :2] += amount * (points[lower, :2] - points[upper, :2])
        below = line_at(points[iris, 0], points, lower) - points[iris, 1]
        target[iris, 1] += amount * np.maximum(below, 0.0)
    return target


def warp_frame(portrait: np.ndarray, points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The portrait warped onto `target` by the head warp (head still), as the animator draws it."""
    warp = HeadWarp((portrait.shape[1], portrait.shape[0]), points)
    source_map, _, _ = warp.maps(target[:, :2], Similarity(1.0, 0.0, np.zeros(2)))
    out = portrait.copy()
    rows, cols = warp.region.slices
    out[rows, cols] = cv2.remap(portrait, source_map, None, cv2.INTER_LINEAR)
    return out


def luminance(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)


def polygon_mask(shape, polygon: np.ndarray, erode: int = 0) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon[:, :2]).astype(np.int32)], 1)
    if erode:
        mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return mask.astype(bool)


def lid_skin(image: np.ndarray, points: np.ndarray, eye: str) -> float:
    """Median luminance between the upper lid and the brow: the skin a closed lid shows."""
    _, upper, _, _, brow, _ = EYES[eye]
    region = polygon_mask(image.shape, np.vstack([points[upper], points[brow][::-1]]), erode=1)
    return float(np.median(luminance(image)[region]))


def eye_box(points: np.ndarray, eye: str) -> tuple[slice, slice]:
    """Rows and columns the painter may touch for an eye: between its corners, from the brow's lower
    edge down to just below the lower lid."""
    corners, _, lower, _, brow, _ = EYES[eye]
    x0, x1 = points[list(corners), 0].min() - 1, points[list(corners), 0].max() + 2
    y0, y1 = points[brow, 1].min() - 1, points[lower, 1].max() + 2
    return slice(int(np.floor(y0)), int(np.ceil(y1))), slice(int(np.floor(x0)), int(np.ceil(x1)))


def rotated(image: np.ndarray, points: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The image and its landmarks rotated by `angle` degrees (counter-clockwise) about the face's centre."""
    centre = tuple(points[:, :2].mean(axis=0))
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    turned = cv2.warpAffine(image, matrix, image.shape[1::-1], flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    moved = points.copy()
    moved[:, :2] = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    return turned, moved


# --- limit_lid_travel ---------------------------------------------------------------------------------


def test_open_eyes_are_not_limited(points):
    assert np.array_equal(limit_lid_travel(points, points), points)
    # Wider than the portrait's: the warp's and the interior painter's job, left as it is.
    wider = closing(points, -0.3)
    assert np.array_equal(limit_lid_travel(wider, points), wider)
    # Closed by less than the warp may close on its own.
    assert np.array_equal(limit_lid_travel(closing(points, 0.8 * (1 - KEEP_OPENING)), points),
                          closing(points, 0.8 * (1 - KEEP_OPENING)))
    assert limit_lid_travel(points[:, :2], points).shape == (478, 2)


@pytest.mark.parametrize("keep", [KEEP_OPENING, 0.5])
def test_blink_is_limited_to_a_share_of_the_opening(points, keep):
    target = closing(points, 1.0)
    limited = limit_lid_travel(target, points, keep=keep)
    moved = np.flatnonzero(np.any(limited != target, axis=1))
    allowed = np.concatenate([eye[1] + eye[3] for eye in EYES.values()])
    assert set(moved) <= set(allowed)
    assert np.array_equal(limited[:, 2], target[:, 2])  # depth untouched
    for corners, upper, lower, iris, _, _ in EYES.values():
        own = across(points, corners, lower) - across(points, corners, upper)
        opening = across(limited, corners, lower) - across(limited, corners, upper)
        assert np.all(opening >= keep * own - 1e-6)
        assert np.all(opening <= keep * own + 1e-6)  # raised no further than needed
        # The lids were raised across the eye, not sideways.
        assert across(limited, corners, upper) == pytest.approx(across(target, corners, upper) - (
            keep * own - (across(target, corners, lower) - across(target, corners, upper))), abs=1e-6)
        # The iris is raised with the lid, never lowered, and its centre (which steers the warp) comes down
        # by no more than the warp may close the eye.
        drop = across(limited, corners, iris) - across(points, corners, iris)
        asked = across(target, corners, iris) - across(points, corners, iris)
        assert np.all(drop <= asked + 1e-6)
        assert np.all(drop >= -1e-6)
        assert 0.5 * (1 - keep) * own.max() < drop[0] <= (1 - keep) * own.max() + 1e-6


def test_limit_follows_head_roll_and_scale(points):
    """The limit is worked out in each eye's own frame: a target rolled and scaled is limited alike."""
    target = closing(points, 1.0)
    turn = cv2.getRotationMatrix2D((256.0, 200.0), 25.0, 1.2)

    def move(p: np.ndarray) -> np.ndarray:
        p = p.copy()
        p[:, :2] = p[:, :2] @ turn[:, :2].T + turn[:, 2]
        return p

    assert limit_lid_travel(move(target), points) == pytest.approx(move(limit_lid_travel(target, points)))
    _, portrait_rolled = rotated(np.zeros((8, 8, 3), np.uint8), points, -15.0)
    assert limit_lid_travel(target, portrait_rolled) == pytest.approx(limit_lid_travel(target, points))


# --- EyelidPainter ------------------------------------------------------------------------------------


def blink_frames(portrait: np.ndarray, points: np.ndarray, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """The frame the warp draws for a blink `amount` of the way down (limited), and that frame painted."""
    target = closing(points, amount)
    limited = limit_lid_travel(target, points)
    warped = warp_frame(portrait, points, limited)
    painted = warped.copy()
    EyelidPainter(points).paint(painted, target, limited)
    return warped, painted


def assert_closed(before: np.ndarray, after: np.ndarray, portrait: np.ndarray, points: np.ndarray) -> None:
    """Inside each eye's opening (the portrait's, less its rim), no pupil or iris is left: lid skin is."""
    for eye in EYES:
        inside = polygon_mask(portrait.shape, points[EYES[eye][5]], erode=1)
        skin = lid_skin(portrait, points, eye)
        lum_before, lum_after = luminance(before)[inside], luminance(after)[inside]
        pupil = luminance(portrait)[inside] < 0.4 * skin  # pupil and the iris's darkest part
        assert pupil.mean() > 0.2, eye
        assert np.mean(lum_before < 0.4 * skin) > 0.2, eye  # the warp alone leaves them
        assert np.mean(lum_after < 0.4 * skin) < 0.08, eye  # what is left is the lashes' line
        assert lum_after[pupil].min() > 0.4 * skin, eye
        assert lum_after[pupil].mean() > 0.75 * skin, eye
        assert lum_after.mean() - lum_before.mean() > 0.3 * (skin - lum_before.mean()), eye


def test_full_blink_closes_the_eye(portrait, points):
    warped, painted = blink_frames(portrait, points, 1.0)
    assert_closed(warped, painted, portrait, points)


def test_paint_stays_in_the_eyes(portrait, points):
    warped, painted = blink_frames(portrait, points, 1.0)
    changed = np.any(painted != warped, axis=2)
    inside = np.zeros_like(changed)
    for eye in EYES:
        rows, cols = eye_box(points, eye)
        assert changed[rows, cols].sum() > 100, eye
        inside[rows, cols] = True
    assert not changed[~inside].any()


def test_change_fades_out_at_the_corners(portrait, points):
    """Painting straight onto the portrait (the warp drew it unchanged): the lid comes down the whole way in
    the middle of the eye and not at all at its corners, so no seam shows there."""
    out = portrait.copy()
    EyelidPainter(points).paint(out, closing(points, 1.0), points)
    change = np.abs(luminance(out) - luminance(portrait))
    for eye, (corners, _, _, _, _, _) in EYES.items():
        rows, _ = eye_box(points, eye)
        x0, x1 = sorted(points[list(corners), 0])
        middle = change[rows, round(x0 + 0.35 * (x1 - x0)):round(x0 + 0.65 * (x1 - x0))].mean()
        ends = np.concatenate([change[rows, round(x) - 1:round(x) + 2] for x in (x0, x1)], axis=1).mean()
        assert middle > 10, eye
        assert ends < 0.2 * middle, eye


def test_blink_with_head_roll(portrait, points):
    """The lids slide across the eye, not down the picture: a rolled head closes its eyes just as well."""
    turned, turned_points = rotated(portrait, points, 20.0)
    _, target = rotated(portrait, closing(points, 1.0), 20.0)
    out = turned.copy()
    EyelidPainter(turned_points).paint(out, target, turned_points)
    assert_closed(turned, out, turned, turned_points)
    changed = np.any(out != turned, axis=2)
    ys, xs = np.nonzero(changed)
    for eye, (corners, _, _, _, _, _) in EYES.items():
        centre = turned_points[list(corners), :2].mean(axis=0)
        width = np.linalg.norm(np.subtract(*turned_points[list(corners), :2]))
        near = np.hypot(xs - centre[0], ys - centre[1]) < 0.75 * width
        assert near.sum() > 100, eye
        xs, ys = xs[~near], ys[~near]
    assert len(xs) == 0


def test_open_eyes_are_not_painted(portrait, points):
    painter = EyelidPainter(points)
    for target in (points, closing(points, -0.3), closing(points, 0.2)):
        out = portrait.copy()
        # The warp drew the target as it is: nothing is left for the painter.
        painter.paint(out, target, limit_lid_travel(target, points))
        assert np.array_equal(out, portrait)


def test_half_blink_covers_the_top_of_the_iris_only(portrait, points):
    warped, painted = blink_frames(portrait, points, 0.5)
    target = closing(points, 0.5)
    ys, xs = np.mgrid[0:portrait.shape[0], 0:portrait.shape[1]]
    for eye, (_, upper, _, iris, _, _) in EYES.items():
        centre, radius = points[iris[0], :2], np.linalg.norm(points[iris[1], :2] - points[iris[0], :2])
        disk = np.hypot(xs - centre[0], ys - centre[1]) <= 0.8 * radius  # the portrait's iris
        lid = line_at(xs, target, upper)
        top, bottom = disk & (ys < lid - 1), disk & (ys > lid + 1)
        assert top.sum() > 20 and bottom.sum() > 20, eye
        skin = lid_skin(portrait, points, eye)
        iris_top = luminance(portrait)[top].mean()
        # Above the target's lid line the iris is covered by the lid (more than the warp alone covers) ...
        assert luminance(painted)[top].mean() > iris_top + 0.3 * (skin - iris_top), eye
        assert luminance(warped)[top].mean() < iris_top + 0.2 * (skin - iris_top), eye
        # ... below it, the iris is left as the warp drew it, still dark.
        assert np.array_equal(painted[bottom], warped[bottom]), eye
        assert luminance(painted)[bottom].mean() < 0.6 * skin, eye


def test_lid_stops_on_the_lower_lid(portrait, points):
    """A target lid asked through the lower lid (landmark noise) closes the eye and covers nothing below."""
    out = portrait.copy()
    EyelidPainter(points).paint(out, closing(points, 1.6), points)
    changed = np.any(out != portrait, axis=2)
    assert changed.sum() > 200
    ys, xs = np.nonzero(changed)
    below = np.zeros(len(xs), bool)
    for _, _, lower, _, _, _ in EYES.values():
        span = (xs >= points[lower, 0].min()) & (xs <= points[lower, 0].max())
        below |= span & (ys > line_at(xs, points, lower) + 1.5)
    assert not below.any()
