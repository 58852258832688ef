"""The engine follows known motions of a real face, keeps the background still and the face steady."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading

import cv2
import numpy as np
import pytest

from vivify import Animator, pipeline
from vivify.demo import open_mouth_frame, similarity_frame
from vivify.errors import VivifyError
from vivify.landmarks import topology
from vivify.landmarks.facemesh import detect_faces
from vivify.motion.pose import fit_similarity
from vivify.render import interior


def landmarks(image: np.ndarray) -> np.ndarray:
    faces = detect_faces(image)
    assert faces, "no face detected in a rendered frame"
    return faces[0][:, :2]


def head_motion(before: np.ndarray, after: np.ndarray):
    return fit_similarity(before[topology.RIGID], after[topology.RIGID])


def head_shift(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Displacement of the centroid of the rigid points (a similarity's translation is about the origin)."""
    return after[topology.RIGID].mean(axis=0) - before[topology.RIGID].mean(axis=0)


@pytest.fixture(scope="module")
def reference(face):
    return landmarks(face)


def render_sequence(face: np.ndarray, frames: list[np.ndarray]) -> np.ndarray:
    animator = Animator(face, rate=25.0)
    out = face
    for frame in [face, *frames]:
        out = animator.render(frame)
    return out


@pytest.mark.parametrize("shift", [(12.0, 0.0), (0.0, -10.0), (-8.0, 6.0)])
def test_head_follows_translation(face, reference, shift):
    # Ease into the pose over several frames, as a real head moves; the filter must not lag at the end.
    frames = [similarity_frame(face, (128, 110), shift=(shift[0] * t, shift[1] * t))
              for t in np.linspace(0, 1, 8)] + [similarity_frame(face, (128, 110), shift=shift)] * 12
    out = render_sequence(face, frames)
    after = landmarks(out)
    assert head_shift(reference, after) == pytest.approx(shift, abs=1.5)
    assert head_motion(reference, after).scale == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("angle", [12.0, -15.0])
def test_head_follows_rotation(face, reference, angle):
    frames = [similarity_frame(face, (128, 110), angle=a) for a in np.linspace(0, angle, 8)]
    frames += [similarity_frame(face, (128, 110), angle=angle)] * 12
    out = render_sequence(face, frames)
    motion = head_motion(reference, landmarks(out))
    # OpenCV's positive angle turns the picture counter-clockwise, which is a negative angle in image axes.
    assert np.degrees(motion.angle) == pytest.approx(-angle, abs=1.5)


def test_head_follows_scale(face, reference):
    frames = [similarity_frame(face, (128, 110), scale=s) for s in np.linspace(1.0, 1.12, 8)]
    frames += [similarity_frame(face, (128, 110), scale=1.12)] * 12
    out = render_sequence(face, frames)
    assert head_motion(reference, landmarks(out)).scale == pytest.approx(1.12, abs=0.025)


@pytest.mark.parametrize(("motion", "kept"), [({"shift": (3.5, 2.5)}, 0.75), ({"angle": 8.0}, 0.85)])
def test_a_moving_face_keeps_its_fine_detail(face, reference, motion, kept):
    """The face, moved by half a pixel or turned, keeps the detail of the photo (the Laplacian's energy over the
    middle of the face): sampled bilinearly it kept 0.59 and 0.74 of it, bicubically 0.81 and 0.91."""
    def moved(t: float) -> np.ndarray:
        return similarity_frame(face, (128, 110), **{key: value * t if key == "angle" else (value[0] * t, value[1] * t)
                                                     for key, value in motion.items()})

    out = render_sequence(face, [moved(t) for t in np.linspace(0, 1, 8)] + [moved(1.0)] * 8)
    x0, y0 = reference[topology.FACE_OVAL].min(axis=0)
    x1, y1 = reference[topology.FACE_OVAL].max(axis=0)
    middle = (slice(round(0.75 * y0 + 0.25 * y1), round(0.25 * y0 + 0.75 * y1)),
              slice(round(0.75 * x0 + 0.25 * x1), round(0.25 * x0 + 0.75 * x1)))

    def detail(image: np.ndarray) -> float:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F))[middle].mean())

    assert detail(out) >= kept * detail(face)


def test_the_sharper_sampling_of_the_face_copies_whole_pixels_and_fades_out_at_its_box():
    from vivify.render.resample import resample

    layers = np.random.default_rng(3).integers(0, 256, (120, 160, 4), dtype=np.uint8)
    rows, columns = np.mgrid[0:100, 0:140].astype(np.float32)
    box = (30, 20, 110, 80)
    still = np.dstack([columns + 7, rows + 9])
    assert np.array_equal(resample(layers, still, box), layers[9:109, 7:147])  # whole pixels: copied exactly
    between = still + 0.5
    out = resample(layers, between, box).astype(np.float32)
    bilinear = cv2.remap(layers, between, None, cv2.INTER_LINEAR).astype(np.float32)
    bicubic = cv2.remap(layers, between, None, cv2.INTER_CUBIC).astype(np.float32)
    assert np.array_equal(out[:, :30], bilinear[:, :30]) and np.array_equal(out[:20], bilinear[:20])
    assert np.abs(out[45:55, 65:75] - bicubic[45:55, 65:75]).max() <= 1  # the box's middle: bicubic
    # From the box's edge inwards the picture goes over from one to the other: no step at the edge.
    share = np.abs(out - bilinear)[30:70].mean(axis=(0, 2)) / np.abs(bicubic - bilinear)[30:70].mean(axis=(0, 2))
    assert share[30] < 0.15 and np.all(np.diff(share[30:70]) > -0.05) and share[70] > 0.95


def test_mouth_opens_with_an_interior(face, reference):
    lower_lip = reference[topology.LOWER_INNER_LIP]
    mouth_width = np.linalg.norm(reference[61] - reference[291])
    frames = [open_mouth_frame(face, lower_lip, mouth_width, drop) for drop in np.linspace(0, 14, 6)]
    frames += [open_mouth_frame(face, lower_lip, mouth_width, 14)] * 10
    out = render_sequence(face, frames)
    after = landmarks(out)
    unit = topology.inter_ocular(reference)
    gain = (topology.mouth_gap(after) - topology.mouth_gap(reference)) / unit
    assert gain > 0.08
    # Between the lips there is now a dark interior that the portrait did not have.
    upper, lower = after[topology.UPPER_INNER_LIP], after[topology.LOWER_INNER_LIP]
    middle = np.round((upper + lower) / 2).astype(int)
    assert out[middle[1], middle[0]].mean() < face[middle[1], middle[0]].mean() - 40


def test_a_black_and_white_photo_opens_a_grey_mouth(face, reference):
    """A mouth opened from landmarks alone (speech) shows a drawn interior: on a black-and-white photo it has no
    colour either, not the red of a drawn cavity and tongue."""
    grey = np.repeat(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    lower_lip = reference[topology.LOWER_INNER_LIP]
    mouth_width = np.linalg.norm(reference[61] - reference[291])
    opened = detect_faces(open_mouth_frame(face, lower_lip, mouth_width, 14))[0]
    animator = Animator(grey, rate=25.0)
    animator.render(None, reference)
    for _ in range(10):
        out = animator.render(None, opened)
    inside = np.zeros(grey.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(animator.last_target[topology.LIPS_INNER]).astype(np.int32)], 1)
    colour = out[inside > 0].astype(int)
    assert inside.sum() > 100 and np.abs(colour[:, 0] - colour[:, 2]).max() <= 4


def test_a_flat_grey_driving_mouth_renders_a_dark_cavity(face, reference):
    """A low-contrast driving video's open mouth, its cavity only a little darker than its lips, is carried
    over with its shadows deepened: an opening that reads as closed lips would not show the driver speaking."""
    import cv2

    lower_lip = reference[topology.LOWER_INNER_LIP]
    mouth_width = np.linalg.norm(reference[61] - reference[291])
    lips = np.zeros(face.shape[:2], np.uint8)
    cv2.fillPoly(lips, [np.round(reference[topology.LIPS_OUTER]).astype(np.int32)], 1)
    lips_colour = face[lips > 0].mean(axis=0)

    def flat(drop: float) -> np.ndarray:
        frame = open_mouth_frame(face, lower_lip, mouth_width, drop)
        cavity = np.all(frame == (40, 12, 15), axis=2)
        frame[cavity] = np.round(0.8 * lips_colour).astype(np.uint8)
        return frame

    animator = Animator(face, rate=25.0)
    for drop in [0.0, *np.linspace(0, 14, 6), *[14.0] * 10]:
        out = animator.render(flat(drop))
    opening = np.zeros(face.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(animator.last_target[topology.LIPS_INNER]).astype(np.int32)], 1)
    opening = cv2.erode(opening, np.ones((3, 3), np.uint8))
    assert opening.sum() > 40
    lightness = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0]
    lips_lightness = cv2.cvtColor(face, cv2.COLOR_RGB2LAB)[..., 0][lips > 0].mean()
    # Without the deepening, the carried grey keeps 0.81 of the lips' lightness; with it, 0.59.
    assert np.percentile(lightness[opening > 0], 25) < 0.7 * lips_lightness


def test_a_mouth_as_open_as_the_portraits_keeps_the_portraits_own_teeth(face, reference):
    """Where the target opens the mouth just as wide as the portrait's own (a smiling portrait at the reference),
    the warp leaves the portrait's teeth as they are: the driver's interior is not pasted over them. Opened wider,
    it is carried in."""
    from vivify.render.interior import MOUTH, InteriorPainter

    # The astronaut smiles with her teeth apart; the driver (her own picture) opens a green mouth.
    portrait = np.hstack([2.0 * reference, np.zeros((len(reference), 1))])
    picture = cv2.resize(face, (512, 512), interpolation=cv2.INTER_CUBIC)
    driving = portrait.copy()
    driving[topology.LIPS_INNER[driving[topology.LIPS_INNER, 1] > driving[topology.LIPS_INNER, 1].mean()], 1] += 12
    frame = picture.copy()
    cv2.fillPoly(frame, [np.round(driving[topology.LIPS_INNER, :2]).astype(np.int32)], (0, 255, 0))
    painter = InteriorPainter(MOUTH, portrait)

    as_open = picture.copy()
    for _ in range(3):
        painter.paint(as_open, portrait, frame, driving)
    np.testing.assert_array_equal(as_open, picture)

    wider = driving.copy()  # the target opens as the driver does, 12 px (0.07 eye spans) more than the portrait
    opened = picture.copy()
    painter.paint(opened, wider, frame, driving)
    middle = np.round(wider[[topology.UPPER_INNER_LIP, topology.LOWER_INNER_LIP], :2].mean(axis=0)).astype(int)
    red, green, _ = opened[middle[1], middle[0]].astype(int)
    assert green - red > 60


def test_a_portrait_showing_its_teeth_keeps_them_as_the_mouth_opens(face, reference):
    """Given the portrait's picture, a mouth that shows its teeth keeps them as it opens wider: the astronaut shows
    her upper teeth, and they stay under her upper lip at their own height while a dark cavity opens below them.
    The interior of a driver whose open mouth shows no teeth (green here: a soft video's blurred mouth) is not
    pasted over them. A driver that shows teeth has its own carried, as for any portrait."""
    from vivify.render.interior import MOUTH, InteriorPainter

    portrait = np.hstack([2.0 * reference, np.zeros((len(reference), 1))])
    picture = cv2.resize(face, (512, 512), interpolation=cv2.INTER_CUBIC)
    lower_inner = topology.LIPS_INNER[portrait[topology.LIPS_INNER, 1] > portrait[topology.LIPS_INNER, 1].mean()]
    lower = [*lower_inner, *topology.LIPS_OUTER[portrait[topology.LIPS_OUTER, 1] > portrait[13, 1]]]
    wider = portrait.copy()  # the lower lip dropped by 16 px (0.09 eye spans), as thick as before
    wider[lower, 1] += 16
    frame = picture.copy()
    cv2.fillPoly(frame, [np.round(wider[topology.LIPS_INNER, :2]).astype(np.int32)], (0, 255, 0))
    painter = InteriorPainter(MOUTH, portrait, picture)

    as_open = picture.copy()
    painter.paint(as_open, portrait, frame, wider)
    np.testing.assert_array_equal(as_open, picture)

    opened = picture.copy()
    painter.paint(opened, wider, frame, wider)
    (x, top), (_, bottom) = np.round(wider[[topology.UPPER_INNER_LIP, topology.LOWER_INNER_LIP], :2]).astype(int)
    own_bottom = round(portrait[topology.LOWER_INNER_LIP, 1])
    column, own_column = (image[:, x - 1:x + 2].astype(int).mean(axis=1).sum(axis=1) for image in (opened, picture))
    teeth = own_column[top:own_bottom].max()
    assert own_column[top:own_bottom].argmax() > 2  # under the lip's edge
    # Her teeth as high as in her photo, under the upper lip, then the cavity down to the lower lip.
    np.testing.assert_allclose(column[top:own_bottom - 2], own_column[top:own_bottom - 2], atol=0.1 * teeth)
    assert column[own_bottom + 2:bottom - 1].max() < 0.4 * teeth
    green = opened[own_bottom + 2:bottom - 1, x].astype(int)
    assert np.all(green[:, 1] - green[:, 0] < 20)
    assert np.all(opened[:top - 12, x] == picture[:top - 12, x])  # above the mouth nothing changed

    toothy = picture.copy()  # a driver whose open mouth is teeth from lip to lip
    cv2.fillPoly(toothy, [np.round(wider[topology.LIPS_INNER, :2]).astype(np.int32)], (240, 240, 235))
    painter = InteriorPainter(MOUTH, portrait, picture)
    carried = picture.copy()
    painter.paint(carried, wider, toothy, wider)
    assert carried[own_bottom + 2:bottom - 1, x - 1:x + 2].astype(int).sum(axis=2).min() > 0.8 * teeth


def test_an_interior_parts_where_its_teeth_do():
    """Upper and lower teeth with a dark line between them part at that line; upper teeth alone, against the lower
    lip, stay whole with the upper lip."""
    from vivify.render.interior import _parting

    opening = np.array([[10, 20], [30, 12], [50, 10], [70, 12], [90, 20], [70, 28], [50, 30], [30, 28]], float)
    mouth = np.full((40, 100, 3), (200, 120, 120), np.uint8)  # lips
    cv2.fillPoly(mouth, [opening.astype(np.int32)], (235, 230, 220))  # teeth
    both_rows = mouth.copy()
    both_rows[23:25] = (60, 30, 30)  # the gap between upper and lower teeth, 65% of the way down
    assert _parting(both_rows, opening) == pytest.approx(0.65, abs=0.06)
    assert _parting(mouth, opening) == 1.0


def test_a_dark_driving_cavity_is_carried_as_it_is(reference):
    from vivify.render.interior import MOUTH, InteriorPainter

    lightness = np.full((40, 60), 150.0, np.float32)
    lightness[14:26, 12:48] = 20.0  # a cavity far darker than the lips
    lightness[14:17, 12:48] = 230.0  # and teeth
    before = lightness.copy()
    opening = np.zeros(lightness.shape, bool)
    opening[12:28, 10:50] = True
    InteriorPainter(MOUTH, reference)._deepen(lightness, 150.0, opening)
    np.testing.assert_allclose(lightness, before, rtol=1e-5)

    teeth_together = np.full((40, 60), 230.0, np.float32)  # no cavity: a few gaps between teeth only
    teeth_together[20, 12:40] = 140.0
    before = teeth_together.copy()
    InteriorPainter(MOUTH, reference)._deepen(teeth_together, 150.0, opening)
    np.testing.assert_allclose(teeth_together, before, rtol=1e-5)


def test_a_flat_cavity_is_deepened_inside_the_opening_only(reference):
    from vivify.render.interior import MOUTH, InteriorPainter

    lightness = np.full((40, 60), 120.0, np.float32)  # the carried lips' inner edge, darker than their mean
    lightness[12:28, 10:50] = 140.0  # a flat grey cavity
    opening = np.zeros(lightness.shape, bool)
    opening[12:28, 10:50] = True
    InteriorPainter(MOUTH, reference)._deepen(lightness, 150.0, opening)
    assert lightness[20, 30] == pytest.approx(150.0 * (140.0 / 150.0) ** 3, rel=1e-4)  # the steepest curve
    assert np.all(lightness[~opening] == 120.0)


def test_background_stays_still(face, reference):
    frames = [similarity_frame(face, (128, 110), shift=(10.0 * t, 0)) for t in np.linspace(0, 1, 10)]
    out = render_sequence(face, frames)
    # Far from the head (more than a face width to its side, above the shoulders) nothing moves.
    left, right = reference[:, 0].min(), reference[:, 0].max()
    top = int(reference[:, 1].min())
    width = right - left
    still = np.zeros(face.shape[:2], bool)
    still[:top, : max(0, int(left - 0.6 * width))] = True
    still[:top, int(right + 0.6 * width):] = True
    if still.any():
        assert np.abs(out[still].astype(int) - face[still].astype(int)).max() <= 2
    # The whole frame outside the warped region is bit-exact.
    corner = out[:8, :8]
    assert np.array_equal(corner, face[:8, :8])


def test_still_driver_does_not_jitter(face):
    """A still face seen through sensor noise: the detector's jitter is filtered out of the motion."""
    rng = np.random.default_rng(7)
    frames = [np.clip(face + rng.normal(0, 4, face.shape), 0, 255).astype(np.uint8) for _ in range(50)]

    def frame_to_frame_motion(smoothing: bool) -> float:
        animator = Animator(face, rate=25.0, smoothing=smoothing)
        targets = []
        for frame in frames:
            animator.render(frame)
            targets.append(animator.last_target.copy())
        return float(np.abs(np.diff(np.array(targets[10:]), axis=0)).mean())

    raw = frame_to_frame_motion(smoothing=False)
    assert raw > 0.05  # the detector does jitter on this input, so the test can fail
    assert frame_to_frame_motion(smoothing=True) < 0.5 * raw


def test_lost_face_holds_pose_and_recovers(face, reference):
    blank = np.full_like(face, 127)
    animator = Animator(face, rate=25.0)
    moved = similarity_frame(face, (128, 110), shift=(8.0, 0.0))
    for frame in [face] + [moved] * 10:
        animator.render(frame)
    held = animator.last_target.copy()
    for _ in range(5):
        out = animator.render(blank)
        assert out.shape == face.shape and out.dtype == np.uint8
    assert np.allclose(animator.last_target, held)
    for _ in range(15):
        out = animator.render(face)
    assert np.abs(head_shift(reference, landmarks(out))).max() < 1.5


def test_output_is_the_portraits_size(face):
    driving = np.ascontiguousarray(similarity_frame(face, (128, 110))[16:240, 8:248])
    animator = Animator(face)
    out = animator.render(driving)
    assert out.shape == face.shape and out.dtype == np.uint8
    assert animator.size == (256, 256)


def test_no_face_in_portrait():
    with pytest.raises(VivifyError, match=r"^no face found in blank\.png$"):
        Animator(np.full((200, 200, 3), 90, np.uint8), name="blank.png")


def test_face_too_small(face):
    tiny = np.full((400, 400, 3), 200, np.uint8)
    tiny[10:42, 10:42] = np.array(np.asarray(face)[::8, ::8])
    with pytest.raises(VivifyError):
        Animator(tiny, name="tiny.png")


@pytest.mark.parametrize("canvas", [(1920, 1080), (1080, 1920), (3240, 1080)])
def test_a_face_a_tenth_of_the_frame_high_is_found_in_any_framing(face, reference, canvas):
    """A face 10% of the frame's height, in a landscape, a portrait-format and a panorama photo: smaller than
    MediaPipe's short-range detector sees on the whole image, found by the full-range one in windows."""
    width, height = canvas
    scale = 0.1 * height / np.ptp(reference[:, 1])
    small = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    photo = np.full((height, width, 3), 170, np.uint8)
    corner = (np.array([width - small.shape[1], height - small.shape[0]]) * [0.7, 0.3]).astype(int)
    photo[corner[1]:corner[1] + small.shape[0], corner[0]:corner[0] + small.shape[1]] = small
    faces = detect_faces(photo)
    assert len(faces) == 1
    expected = reference * scale + corner
    assert np.abs(faces[0][:, :2] - expected).mean() < 0.02 * 0.1 * height  # within 2% of the face's height


def test_not_an_rgb_array():
    with pytest.raises(VivifyError, match="expected an RGB uint8 array"):
        Animator(np.zeros((10, 10), np.float32))
    with pytest.raises(VivifyError) as error:
        Animator(np.zeros((0, 0, 3), np.uint8))  # MediaPipe failed inside its graph
    assert str(error.value) == "portrait: expected an RGB uint8 array of shape H×W×3, got uint8 (0, 0, 3)"


def test_bad_driving_frames_and_landmarks_are_named(face):
    animator = Animator(face, rate=25.0)
    bad_frames = {"float64 (256, 256, 3)": face / 255.0, "uint8 (256, 256)": face[..., 0],
                  "uint8 (256, 256, 4)": np.dstack([face, face[..., :1]])}
    for got, frame in bad_frames.items():
        for call in (animator.render, animator.track):
            with pytest.raises(VivifyError) as error:
                call(frame)
            assert str(error.value) == f"driving frame: expected an RGB uint8 array of shape H×W×3, got {got}"
    with pytest.raises(VivifyError) as error:
        animator.render(face, np.zeros((10, 2)))
    assert str(error.value) == "landmarks: expected the 478×3 array that `track` returns, got float64 (10, 2)"
    animator.close()


@pytest.mark.parametrize(("options", "message"), [
    ({"reference": "middle"}, 'reference \'middle\': expected "first", "best" or a frame number such as "12"'),
    ({"faces": "bogus"}, 'faces \'bogus\': expected "all" or face numbers from 0, such as [0, 2]'),
    ({"faces": [0, -1]}, 'faces [0, -1]: expected "all" or face numbers from 0, such as [0, 2]'),
    ({"size": (0, 0)}, "output size (0, 0): expected (width, height), each at least 2 px"),
    ({"max_side": 1}, "longest side 1: expected at least 2 px"),
])
def test_bad_options_of_the_python_api_are_named(face, tmp_path, options, message):
    """The Python API's own options, which the command line checks as it parses them: they failed with
    Python's or OpenCV's errors."""
    portrait = tmp_path / "portrait.png"
    cv2.imwrite(str(portrait), face[..., ::-1])
    with pytest.raises(VivifyError) as error:
        pipeline.animate(portrait, tmp_path / "driving.mp4", tmp_path / "out.mp4", **options)
    assert str(error.value) == message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["portrait.png"]


def test_a_closed_animator_says_so(face):
    animator = Animator(face, rate=25.0)
    animator.render(face)
    animator.close()
    for call in (animator.render, animator.track):
        with pytest.raises(RuntimeError, match="this Animator is closed"):
            call(face)
    animator.close()  # closing again does nothing


def test_a_driving_frame_at_another_size_moves_the_face_as_at_the_reference_size(face):
    """A stream that changes its resolution: the same picture at twice or half the size is the same pose, not a
    head that came closer (it tore the portrait apart)."""
    moved = similarity_frame(face, (128, 110), shift=(6.0, -4.0))
    renders = []
    for size in (256, 512, 128):
        animator = Animator(face, rate=25.0, smoothing=False)
        animator.render(face)
        renders.append(animator.render(cv2.resize(moved, (size, size), interpolation=cv2.INTER_AREA)).astype(float))
        animator.close()
    assert np.abs(renders[1] - renders[0]).mean() < 1.0
    assert np.abs(renders[2] - renders[0]).mean() < 2.0


def test_first_frames_without_a_face(face):
    """Until the driver's face first appears the portrait stays as it is; then it follows."""
    animator = Animator(face, rate=25.0)
    blank = np.full_like(face, 127)
    for _ in range(3):
        assert np.abs(animator.render(blank).astype(int) - face).max() <= 1  # rounding only
    for _ in range(5):
        out = animator.render(face)
    assert out.shape == face.shape


def test_expression_detail_carries_shading(face, reference):
    """A shadow that appears on the driver's cheek darkens the same cheek in the output, within the clamp."""
    cheek = np.round(reference[205]).astype(int)  # MediaPipe's left cheek point
    shaded = face.copy()
    y0, x0 = cheek[1] - 6, cheek[0] - 6
    shaded[y0:y0 + 12, x0:x0 + 12] = (shaded[y0:y0 + 12, x0:x0 + 12] * 0.6).astype(np.uint8)

    def cheek_brightness(detail: bool) -> float:
        animator = Animator(face, rate=25.0, detail=detail)
        for frame in [face] * 3 + [shaded] * 3:
            out = animator.render(frame)
        return float(out[y0 + 3:y0 + 9, x0 + 3:x0 + 9].mean())

    plain, detailed = cheek_brightness(False), cheek_brightness(True)
    assert detailed < 0.9 * plain
    assert detailed > 0.7 * plain  # the ratio is clamped at 0.75: a shadow, never the driver's pixels


def swayed_body(image: np.ndarray, below: float, shift: float) -> np.ndarray:
    """`image` with everything more than 10 px below row `below` moved `shift` px sideways (a body that sways
    under a still head), blended over those 10 rows."""
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    weight = np.clip((ys - below) / 10.0, 0.0, 1.0)
    return cv2.remap(image, xs - shift * weight, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def shoulder_shift(face: np.ndarray, out: np.ndarray, reference: np.ndarray) -> float:
    """How far (px, sideways) the output's shoulders lie from the portrait's."""
    top = int(reference[152, 1]) + 30  # below the chin and its blend
    band = (slice(top, face.shape[0] - 4), slice(4, face.shape[1] - 4))
    gray = [cv2.cvtColor(np.ascontiguousarray(image[band]), cv2.COLOR_RGB2GRAY).astype(np.float64)
            for image in (face, out)]
    (dx, _), _ = cv2.phaseCorrelate(*gray)
    return dx


@pytest.mark.parametrize("body", [True, False])
def test_the_body_sways_as_the_drivers_does(face, reference, body):
    """The face holds still while the body below it moves 6 px sideways: the portrait's shoulders go along
    (the driver's optical flow), or stay where they are without `body`. The face stays put either way."""
    below = float(reference[152, 1]) + 8
    frames = [swayed_body(face, below, 6.0 * t) for t in np.linspace(0, 1, 6)] + [swayed_body(face, below, 6.0)] * 6
    animator = Animator(face, rate=25.0, body=body)
    for frame in [face, *frames]:
        out = animator.render(frame)
    assert shoulder_shift(face, out, reference) == pytest.approx(6.0 if body else 0.0, abs=1.0)
    assert np.abs(head_shift(reference, landmarks(out))).max() < 1.0


def test_the_portrait_holds_while_the_drivers_face_is_out_of_the_frame(face):
    """A camera pans until the driver's face has left the frame (a flat fill comes in behind it), holds there,
    and pans back. While the face is lost the portrait holds its last pose, body and hair too: the body's
    flow, which followed the pan's fill, tore the portrait apart (frame-to-frame change 6-17 levels)."""
    fill = np.full_like(face, 128)

    def panned(offset: int) -> np.ndarray:
        frame = fill.copy()
        frame[:, offset:] = face[:, :face.shape[1] - offset]
        return frame

    out_and_back = [panned(offset) for offset in (20, 40, 60, 80, 100, 120)]
    frames = [face, *out_and_back, *[fill] * 8, *out_and_back[::-1], *[face] * 10]
    animator = Animator(face, rate=25.0)
    outputs = [animator.render(frame).astype(np.int16) for frame in frames]
    lost = [index for index, frame in enumerate(frames) if frame is fill]
    held = [np.abs(outputs[index] - outputs[index - 1]).mean() for index in lost[1:]]
    assert max(held) < 0.5, held
    # Back where it started, the portrait is itself again.
    assert np.abs(outputs[-1] - face).mean() < 3.0


def test_a_rising_body_still_reaches_the_bottom_of_the_frame(face, reference):
    """The body is cut by the frame's bottom edge; when the driver rises, the portrait's body rises with it
    and goes on below the frame, instead of a band of background plate opening under it or its last row
    repeated into streaks."""
    frames = [similarity_frame(face, (128, 110), shift=(0.0, -10.0 * t)) for t in np.linspace(0, 1, 6)]
    frames += [similarity_frame(face, (128, 110), shift=(0.0, -10.0))] * 6
    animator = Animator(face, rate=25.0)
    for frame in [face, *frames]:
        out = animator.render(frame)
    assert shoulder_shift(face, out, reference) == pytest.approx(0.0, abs=1.0)  # it rose, it did not slide
    below_chin = slice(int(reference[152, 0]) - 20, int(reference[152, 0]) + 20)
    # Rows below the risen body show its rows above the frame's edge again, mirrored, as cloth goes on: not
    # the plate, and not its last row repeated into vertical streaks.
    bottom, cloth = out[-6:, below_chin].astype(int), face[-12:, below_chin].astype(int)
    plate = animator._plate[-6:, below_chin, :3].astype(int)
    assert np.abs(bottom.mean(axis=(0, 1)) - cloth.mean(axis=(0, 1))).mean() < 0.5 * np.abs(
        bottom.mean(axis=(0, 1)) - plate.mean(axis=(0, 1))).mean()
    assert np.abs(np.diff(bottom, axis=0)).mean() > 0.5 * np.abs(np.diff(cloth, axis=0)).mean()


def test_a_head_shot_cut_under_the_chin_rises_without_a_second_chin(face, reference):
    """The frame's bottom edge cuts the collar 14 px under the chin, and the driver rises 20 px. What comes in
    from below the edge goes on from the clothing there: the picture mirrored at the edge showed the chin
    again, upside down, under the risen one."""
    chin = math.ceil(float(reference[:, 1].max()))
    cut = np.ascontiguousarray(face[:chin + 14])
    height, width = cut.shape[:2]
    frames = [similarity_frame(cut, (width / 2, height / 2), shift=(0.0, -20.0 * t)) for t in np.linspace(0, 1, 6)]
    frames += [similarity_frame(cut, (width / 2, height / 2), shift=(0.0, -20.0))] * 6
    animator = Animator(cut, rate=25.0)
    for frame in [cut, *frames]:
        out = animator.render(frame)
    under_chin = slice(int(reference[152, 0]) - 20, int(reference[152, 0]) + 20)
    bottom = out[-6:, under_chin].reshape(-1, 3).mean(axis=0)
    clothing = cut[-3:, under_chin].reshape(-1, 3).mean(axis=0)
    skin = cut[chin - 12:chin - 2, under_chin].reshape(-1, 3).mean(axis=0)
    assert np.abs(bottom - clothing).mean() < 0.5 * np.abs(bottom - skin).mean(), (bottom, clothing, skin)


def _moved_down(photo: np.ndarray, drop: float) -> tuple[Animator, np.ndarray]:
    """The photo animated by itself moving `drop` px down and holding there: the animator and its last frame."""
    height, width = photo.shape[:2]
    frames = [similarity_frame(photo, (width / 2, height / 2), shift=(0.0, drop * t)) for t in np.linspace(0, 1, 6)]
    frames += [similarity_frame(photo, (width / 2, height / 2), shift=(0.0, drop))] * 6
    animator = Animator(photo, rate=25.0)
    for frame in [photo, *frames]:
        out = animator.render(frame)
    return animator, out


def test_hair_cut_by_the_top_goes_on_above_a_head_that_moves_down(face, reference):
    """The frame's top edge cuts the hair, and the driver moves down 12 px. Above the head what comes in from
    beyond the edge is hair, as the hair goes on there: not the plate, which left the hair cut flat with the
    background above it. Beside the head, where the background meets the edge, the background stays."""
    cut = np.ascontiguousarray(face[28:])
    animator, out = _moved_down(cut, 12.0)
    head = slice(int(reference[:, 0].min()) + 10, int(reference[:, 0].max()) - 10)
    above = out[:6, head].reshape(-1, 3).mean(axis=0)
    hair = cut[:6, head].reshape(-1, 3).mean(axis=0)
    plate = animator._plate[:6, head, :3].reshape(-1, 3).mean(axis=0)
    assert np.abs(above - hair).mean() < 0.4 * np.abs(above - plate).mean(), (above, hair, plate)
    beside = slice(10, 40)
    assert np.abs(out[:6, beside].astype(int) - cut[:6, beside]).mean() < 4


def test_hair_cut_just_above_the_forehead_goes_on_as_hair_not_streaks(face, reference):
    """The top edge cuts the hair a few pixels above the forehead, and the driver moves down 16 px. What comes
    in above the head varies down the rows as the hair does: folded within the few rows of hair beside the edge,
    they repeated into vertical streaks."""
    cut = np.ascontiguousarray(face[int(reference[:, 1].min()) - 8:])
    _, out = _moved_down(cut, 16.0)
    head = slice(int(reference[:, 0].min()) + 10, int(reference[:, 0].max()) - 10)
    above, hair = out[:12, head].astype(float), cut[:12, head].astype(float)
    # Down each column, as much variety as in the hair: one or two rows repeated have next to none.
    assert above.std(axis=0).mean() > 0.5 * hair.std(axis=0).mean()


def test_a_face_cut_by_the_side_of_the_frame_goes_on_beyond_it(face, reference):
    """A close crop cuts the face at the left edge; when the driver moves right, the face that comes in from
    beyond the edge shows the face beside the edge mirrored, not a stripe of background plate across the cheek
    nor the edge's pixels repeated into streaks."""
    cut = np.ascontiguousarray(face[:, int(reference[:, 0].min()) + 15:])
    height, width = cut.shape[:2]
    frames = [similarity_frame(cut, (width / 2, height / 2), shift=(12.0 * t, 0.0)) for t in np.linspace(0, 1, 6)]
    frames += [similarity_frame(cut, (width / 2, height / 2), shift=(12.0, 0.0))] * 4
    animator = Animator(cut, rate=25.0)
    for frame in [cut, *frames]:
        out = animator.render(frame)
    rows = slice(int(reference[:, 1].min()), int(reference[:, 1].max()))
    edge = out[rows, :6].astype(int)
    mirrored = np.abs(edge - cut[rows, 12:6:-1]).mean()  # 12 px in: output column j shows column 12 - j
    repeated = np.abs(edge - cut[rows, :1]).mean()
    plate = np.abs(edge - animator._plate[rows, :6, :3]).mean()
    assert mirrored < 0.6 * min(repeated, plate), (mirrored, repeated, plate)


def test_coverage_is_the_person_where_it_moved_and_where_it_was(face, reference):
    """`coverage`: the pixels of the region that only this animator renders as they should be, the person where
    the frame moved it and where the portrait showed it (where another face's render of the photo still shows it,
    and this one the background plate)."""
    animator = Animator(face, rate=25.0)
    before = animator.coverage().copy()  # the portrait's person
    moves = [similarity_frame(face, (128, 128), shift=(14.0 * t, 0.0)) for t in np.linspace(0, 1, 6)]
    for frame in [face, *moves, *moves]:
        animator.render(frame)
    after = animator.coverage()
    rows, columns = animator.region
    assert after.shape == before.shape == (rows.stop - rows.start, columns.stop - columns.start)
    assert np.all(after >= before)
    forehead = int(reference[10, 1]) - rows.start
    right_side = [int(np.nonzero(coverage[forehead] > 128)[0].max()) for coverage in (before, after)]
    assert right_side[1] - right_side[0] == pytest.approx(14, abs=2)
    assert after[:8, :8].max() == 0  # the wall above the shoulder


def test_a_group_photo_keeps_its_bodies_still(face, reference):
    """Two faces side by side: each face's region reaches the other, so the one driver's body motion is not
    used; the shoulders stay while the driver's body sways."""
    below = float(reference[152, 1]) + 8
    group = np.ascontiguousarray(np.hstack([face, face]))
    animator = Animator(group, rate=25.0)
    assert animator.faces_found == 2
    for frame in [face] + [swayed_body(face, below, 6.0 * t) for t in np.linspace(0, 1, 6)] * 2:
        out = animator.render(frame)
    left = animator.region[1].start
    assert shoulder_shift(group[:, left:left + 256], out[:, left:left + 256], reference) == pytest.approx(0.0, abs=1.0)


def test_a_group_photo_keeps_the_other_people_still(face):
    """A large face beside a smaller person: the large face's warp reaches over the other person, who stays
    where they are instead of being dragged along with the large face's head (their hair, their shoulder)."""
    from vivify.demo import face_crop

    other = np.pad(face_crop(150)[:, ::-1], ((106, 0), (0, 0), (0, 0)), mode="edge")
    group = np.ascontiguousarray(np.hstack([face[:, :200], other]))
    animator = Animator(group, rate=25.0)  # face 0: the largest
    assert animator.faces_found == 2 and animator.region[1].stop > 230
    moves = [similarity_frame(face, (128, 128), shift=(12.0 * t, 0.0), angle=8.0 * t) for t in np.linspace(0, 1, 6)]
    for frame in [face, *moves, *moves]:
        out = animator.render(frame)
    beyond = slice(216, animator.region[1].stop)  # the other person, past where the large one's own hair moves
    assert np.abs(out[:, beyond].astype(int) - group[:, beyond]).max() <= 2


def test_the_background_between_the_people_of_a_group_photo_is_nobodys(face):
    """Two portraits side by side: seen whole, the segmenter took the wall between the two heads for more of the
    left person, whose head then dragged it along. Each face's person is the segmenter's where it agrees with
    its view of that face's surroundings alone: the wall is nobody's and stays still."""
    from vivify.render.background import person_mask
    from vivify.render.warp import moving_region

    group = np.ascontiguousarray(np.hstack([face, face[:, ::-1]]))
    faces = detect_faces(group)
    left, right = sorted(faces, key=lambda points: points[:, 0].mean())
    # Between the heads, from the nose down to the chin, a quarter of a face clear of either face.
    columns = slice(int(left[topology.FACE_OVAL, 0].max() + 0.25 * np.ptp(left[:, 0])),
                    int(right[topology.FACE_OVAL, 0].min() - 0.25 * np.ptp(right[:, 0])))
    rows = slice(int(left[1, 1]), int(left[152, 1]))
    for index, points in enumerate(faces):  # where each face's motion may change the picture
        mask = np.zeros(group.shape[:2], np.float32)
        region = moving_region((group.shape[1], group.shape[0]), points).slices
        mask[region] = person_mask(group, faces, index)[region]
        assert mask[rows, columns].max() < 0.05
    animator = Animator(group, rate=25.0)
    moves = [similarity_frame(face, (128, 128), shift=(-8.0 * t, 4.0 * t), angle=6.0 * t) for t in np.linspace(0, 1, 6)]
    for frame in [face, *moves, *moves]:
        out = animator.render(frame)
    assert np.abs(out[rows, columns].astype(int) - group[rows, columns]).max() <= 2


def test_a_face_below_another_is_its_own_persons(face):
    """A front row under a back row: the upper person's body reaches down to the lower face. The body below each
    chin belongs to that face only as far as the photo is nearer it than any other face; running on, it gave part
    of the lower face to the person above (a seam down the middle of the lower face, which moved with the head
    above)."""
    from vivify.render.background import person_mask

    group = np.ascontiguousarray(np.vstack([face, face]))
    faces = detect_faces(group)
    assert len(faces) == 2
    upper, lower = sorted(range(2), key=lambda index: faces[index][:, 1].mean())
    oval = np.zeros(group.shape[:2], np.uint8)
    cv2.fillConvexPoly(oval, cv2.convexHull(faces[lower][topology.FACE_OVAL, :2].astype(np.int32)), 1)
    assert person_mask(group, faces, lower)[oval > 0].min() > 0.9
    assert person_mask(group, faces, upper)[oval > 0].max() < 0.1


def test_stray_hairs_beyond_the_person_mask_move_with_the_head(face, reference):
    """Thin strands of hair above the head that the segmenter leaves out (Sam Altman's photo has them) are the
    person's: left on the background plate, they hung in the air when the head moved down."""
    from vivify.render.background import person_mask

    plain = person_mask(face, [reference])
    strands = face.copy()
    tips = []
    for x in (80, 100, 190):
        top = int(np.argmax(plain[:, x] > 0.5))
        hair = face[top + 4:top + 8, x - 2:x + 3].reshape(-1, 3).mean(axis=0)  # the hair's colour below
        cv2.line(strands, (x, top), (x + 3, top - 12), tuple(float(c) for c in hair), 1, cv2.LINE_AA)
        tips.append((top - 9, x + 2))
    tips = tuple(np.array(tips).T)
    assert plain[tips].max() < 0.5  # the segmenter's mask (as grown) stops short of the tips
    assert person_mask(strands, [reference])[tips].min() > 0.5
    animator = Animator(strands, rate=25.0)
    moves = [similarity_frame(face, (128, 128), shift=(0.0, 12.0 * t)) for t in np.linspace(0, 1, 6)]
    for frame in [face, *moves, *moves]:
        out = animator.render(frame)
    # Where the tips were, the background again: no darker than the photo's wall there.
    darker = face[tips].astype(int).sum(axis=1) - out[tips].astype(int).sum(axis=1)
    assert darker.max() < 30, darker


def test_small_holes_in_the_person_mask_are_filled():
    """A hole enclosed by the person's mask is the segmenter's miss (a flag's stripe behind the hair taken for
    the person but for a blot): left open, the inpainted plate shows through it and moves about."""
    from vivify.render.background import _fill_small_holes

    mask = np.zeros((100, 100), np.float32)
    mask[20:80, 20:80] = 1.0
    mask[40:45, 40:45] = 0.0  # a small hole: filled
    mask[30:32, 60:80] = 0.0  # a notch open to the outside: kept
    mask[50:70, 25:45] = 0.0  # a large hole, background seen through the person: kept
    filled = mask.copy()
    _fill_small_holes(filled, 10.0)
    assert filled[40:45, 40:45].min() == 1.0
    assert filled[30:32, 60:80].max() == 0.0
    assert filled[50:70, 25:45].max() == 0.0
    assert np.array_equal(filled[mask > 0], mask[mask > 0])


def test_specks_of_the_person_mask_apart_from_the_person_are_cleared():
    """A small speck of mask apart from the person is the segmenter's mistake on the background (pieces of a flag
    beside the hair, on the shared Trump photo): left in, it moved with the person and tore its piece out of the
    background. The person and a large part apart from it (another person) are kept."""
    from vivify.render.background import _clear_specks

    mask = np.zeros((100, 100), np.float32)
    mask[20:80, 20:60] = 1.0  # the person
    mask[10:15, 70:75] = 0.5  # a speck: cleared
    mask[40:45, 60:63] = 0.8  # a bump on the person's edge, joined to it: kept
    mask[30:70, 80:95] = 1.0  # a large part apart from the person: kept
    cleared = mask.copy()
    _clear_specks(cleared, 10.0)
    assert cleared[10:15, 70:75].max() == 0.0
    mask[10:15, 70:75] = 0.0
    assert np.array_equal(cleared, mask)


def test_the_background_plate_meets_the_shading_beside_the_person():
    """Beside the person the background is in shadow (a painting's dark fringe around the hair), lighter further
    out. The plate's fill must meet that shadow at the person's edge: filled from the lighter wall beyond it,
    the strip that a moving head uncovers showed as a pale outline of its silhouette."""
    from vivify.render.background import background_plate

    height, width = 512, 400
    person = np.zeros((height, width), np.uint8)
    cv2.circle(person, (200, 200), 110, 255, -1)
    person[260:, 110:290] = 255
    alpha = cv2.GaussianBlur(person, (7, 7), 0)
    edge_distance = cv2.distanceTransform((alpha == 0).astype(np.uint8), cv2.DIST_L2, 3)
    # Darkest at the person (50), lightening over 16 px to the wall's 200.
    wall = np.clip(50 + 150 * edge_distance / 16, 50, 200).astype(np.uint8)
    rgb = np.dstack([np.where(person > 0, 120, wall)] * 3).astype(np.uint8)
    plate = background_plate(rgb, alpha)

    assert np.array_equal(plate[alpha == 0], rgb[alpha == 0])  # the visible background is kept exactly
    inner_edge = (alpha > 0) & (cv2.distanceTransform((alpha > 0).astype(np.uint8), cv2.DIST_L2, 3) <= 2)
    inner_edge[height - 10:] = False  # the body leaves the frame at the bottom: no background beside it there
    # Before: a median of 102 and a 90th percentile of 127 there, against the shadow's 50 beside it.
    assert np.median(plate[inner_edge]) < 75
    assert np.percentile(plate[inner_edge], 90) < 100


def test_the_background_plate_carries_the_texture_beside_the_person():
    """A canvas's fine texture (noise here) goes on into the plate's fill near the person's edge: a smooth fill
    showed as a pale band where the head uncovered it."""
    from vivify.render.background import background_plate

    height, width = 512, 400
    person = np.zeros((height, width), np.uint8)
    cv2.circle(person, (200, 220), 120, 255, -1)
    alpha = cv2.GaussianBlur(person, (5, 5), 0)
    canvas = np.random.default_rng(1).normal(128, 20, (height, width)).clip(0, 255)
    rgb = np.dstack([np.where(person > 0, 90, canvas)] * 3).astype(np.uint8)
    plate = background_plate(rgb, alpha).astype(np.float32)

    def fine(image: np.ndarray) -> np.ndarray:
        return np.abs(image - cv2.GaussianBlur(image, (0, 0), 2)).mean(axis=2)

    inside = cv2.distanceTransform((alpha > 0).astype(np.uint8), cv2.DIST_L2, 3)
    outside = cv2.distanceTransform((alpha == 0).astype(np.uint8), cv2.DIST_L2, 3)
    near_inside, near_outside = (inside >= 2) & (inside <= 15), (outside >= 2) & (outside <= 15)
    deep = inside > 100
    texture = fine(rgb.astype(np.float32))[near_outside].mean()
    # Before: 0.02 of the canvas's texture near the edge; now 0.8.
    assert fine(plate)[near_inside].mean() > 0.5 * texture
    assert fine(plate)[deep].mean() < 0.1 * texture  # deep inside, where nothing mirrors, the fill stays smooth


def test_driving_frames_of_another_size_than_the_reference(face):
    """The reference is a full frame, the later frames a crop of another shape (a stream that changes its
    framing): the body's flow, which compares frames pixel for pixel, sits out; rendering goes on."""
    cropped = np.ascontiguousarray(similarity_frame(face, (128, 110), shift=(6.0, 0.0))[40:, 30:])
    outputs = []
    for body in (True, False):
        animator = Animator(face, rate=25.0, body=body)
        for frame in [face] + [cropped] * 3:
            outputs.append(animator.render(frame))
    assert outputs[-1].shape == face.shape
    assert np.array_equal(outputs[3], outputs[-1])  # with the flow sitting out, as without it


def test_a_still_body_does_not_jitter(face, reference):
    """A still driver seen through sensor noise: the shoulders stay where they are. Each frame's flow is
    measured against the reference (started from the previous frame's), so noise neither drifts nor adds up."""
    rng = np.random.default_rng(11)
    frames = [np.clip(face + rng.normal(0, 4, face.shape), 0, 255).astype(np.uint8) for _ in range(20)]
    animator = Animator(face, rate=25.0)
    shifts = [shoulder_shift(face, animator.render(frame), reference) for frame in [face, *frames]]
    assert np.abs(shifts).max() < 0.25


@pytest.mark.parametrize("angle", [0.0, 20.0])
def test_hair_beside_the_face_follows_a_head_turn(reference, angle):
    """A turn (yaw) moves the sides of the face oval one way along the eye line, the far side most; the hair
    controls beside them go along, so the cheek is not pulled in under still hair. A smile or a wide mouth
    (the sides apart) and a raised brow (along the face's up axis) move no hair."""
    from vivify.motion.pose import Similarity
    from vivify.render.warp import HeadWarp

    warp = HeadWarp((512, 512), reference)
    pose = Similarity(1.0, np.radians(angle), np.zeros(2))
    eye_line = reference[topology.RIGHT_EYE.corners[1]] - reference[topology.LEFT_EYE.corners[0]]
    eye_line /= np.linalg.norm(eye_line)
    face_up = np.array([eye_line[1], -eye_line[0]])
    along = pose.linear @ eye_line  # the eye line in the output
    left_side = np.array([i for i in topology.FACE_OVAL if reference[i, 0] < reference[1, 0]])
    right_side = np.array([i for i in topology.FACE_OVAL if reference[i, 0] > reference[1, 0]])
    ring = slice(len(topology.WARP_CONTROLS), len(topology.WARP_CONTROLS) + len(warp.head_ring))
    ring_left = warp.head_ring[:, 0] < reference[1, 0]

    def ring_shift(moved: np.ndarray) -> np.ndarray:
        return warp.controls(pose.apply(moved), pose)[0][ring] - warp.controls(pose.apply(reference), pose)[0][ring]

    turned = reference.copy()
    turned[left_side] += 6.0 * eye_line  # the far side 6 px towards the nose, the near side 3 px
    turned[right_side] += 3.0 * eye_line
    shift = ring_shift(turned)
    np.testing.assert_allclose(shift[ring_left], np.tile(6.0 * along, (ring_left.sum(), 1)), atol=1e-4)
    sides = ~ring_left & (warp.head_ring[:, 0] > reference[1, 0] + 1)  # not the forehead's middle
    np.testing.assert_allclose(shift[sides], np.tile(3.0 * along, (sides.sum(), 1)), atol=1e-4)

    widened = reference.copy()
    widened[left_side] -= 3.0 * eye_line
    widened[right_side] += 3.0 * eye_line
    assert np.abs(ring_shift(widened)).max() < 0.5

    raised = reference.copy()
    raised[topology.FACE_OVAL] += 5.0 * face_up
    np.testing.assert_allclose(ring_shift(raised), 0.0, atol=1e-4)


def test_the_fine_maps_meet_the_coarse_map_without_a_seam(reference):
    """Eyes and mouth are mapped on a finer grid pasted over the coarse one. Under a turn that pulls the cheek
    in beside the eye the two differ at the fine box's edge; feathered in, neighbouring pixels still map to
    neighbouring places (pasted plainly, they jumped by 5.4 px there)."""
    from vivify.motion.pose import IDENTITY
    from vivify.render.warp import HeadWarp

    warp = HeadWarp((256, 256), reference)
    turned = reference.copy()
    turned[[i for i in topology.FACE_OVAL if reference[i, 0] < reference[1, 0]], 0] += 12.0
    source_map, _, _ = warp.maps(turned, IDENTITY)
    assert max(np.abs(np.diff(source_map, axis=axis)).max() for axis in (0, 1)) < 4.0


def test_the_warp_map_is_the_same_with_half_its_points_on_a_helper_thread(reference):
    """`render` hands half of the spline's points to its helper thread; the map is the same either way, and the
    same as the thin-plate spline written out point by point."""
    from concurrent.futures import ThreadPoolExecutor

    from vivify.motion.pose import IDENTITY
    from vivify.render.warp import HeadWarp, _SplineEvaluator

    warp = HeadWarp((256, 256), reference)
    opened = reference.copy()
    opened[topology.LOWER_INNER_LIP, 1] += 8.0
    alone, _, _ = warp.maps(opened, IDENTITY)
    with ThreadPoolExecutor(1) as helper:
        shared, _, _ = warp.maps(opened, IDENTITY, helper=helper)
    np.testing.assert_allclose(shared, alone, atol=1e-3)

    rng = np.random.default_rng(0)
    evaluate = _SplineEvaluator()
    for points, controls in ((100, 50), (400, 10)):  # more points against fewer controls: its memory grows
        at, centers = rng.random((points, 2), np.float32), rng.random((controls, 2), np.float32)
        coeffs = rng.normal(size=(controls + 3, 2)).astype(np.float32)
        d2 = ((at[:, None] - centers[None]) ** 2).sum(axis=2)
        kernel = d2 * np.log(np.maximum(d2, 1e-12))
        written_out = kernel @ coeffs[:controls] + coeffs[controls] + at @ coeffs[controls + 1:]
        np.testing.assert_allclose(evaluate(at, centers, coeffs), written_out, atol=1e-4)


def test_the_engine_loads_without_what_a_portrait_does_not_need():
    """MediaPipe's package __init__ pulls in matplotlib for its drawing utilities (0.9 s of every start); the
    engine loads only the graphs it runs. scikit-image's watershed, which parts the people of a group photo,
    brings SciPy with it (0.37 s): it is loaded when a group photo needs it."""
    import subprocess
    import sys

    script = "import sys, vivify.pipeline; print(*(name in sys.modules for name in ('matplotlib', 'skimage', 'scipy')))"
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "False", "False"]


def test_a_program_that_imports_mediapipe_after_the_engine_gets_all_of_it():
    """After the engine's loading, `import mediapipe` gave a package without `solutions` (AttributeError)."""
    import subprocess
    import sys

    script = ("import vivify.animator, mediapipe as mp, mediapipe.python.solutions as solutions; "
              "from vivify.landmarks import mediapipe_graphs; "
              "print(mp.__version__, mp.solutions.face_mesh is mediapipe_graphs.face_mesh, "
              "solutions.drawing_utils.__name__, mp.tasks.__name__)")
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          ).stdout.split() == ["0.10.21", "True", "mediapipe.python.solutions.drawing_utils",
                                               "mediapipe.tasks.python"]


def test_an_animator_runs_numpys_linear_algebra_on_one_thread():
    """OpenBLAS keeps idle threads spinning after each call; on two cores they take the core that MediaPipe
    works on. The engine's matrices are small, so an animator keeps BLAS to one thread, also where the caller
    loaded NumPy before vivify (whose import sets OpenBLAS's default only for a NumPy not yet loaded). In a
    fresh process: the limit lasts the process."""
    import subprocess
    import sys

    script = ("import numpy, threadpoolctl; from vivify import Animator; from vivify.demo import astronaut; "
              "Animator(astronaut()); "
              "print(sorted({pool['num_threads'] for pool in threadpoolctl.threadpool_info() "
              "if pool['user_api'] == 'blas'}))")
    # Without the default that importing vivify here has set: the child's NumPy starts as a caller's would.
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env=env).stdout.strip() == "[1]"


@pytest.mark.parametrize("visibility", [False, True])
def test_landmarks_read_from_mediapipes_messages(visibility):
    """The landmarks' pixels, whether the message has Face Mesh's usual layout (read in bulk) or not."""
    from mediapipe.framework.formats import landmark_pb2  # after vivify's MediaPipe loading, at the top

    from vivify.landmarks.facemesh import _to_pixels

    rng = np.random.default_rng(0)
    values = rng.uniform(-0.5, 1.0, (478, 3)).astype(np.float32)
    message = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in values:
        landmark = message.landmark.add(x=x, y=y, z=z)
        if visibility:
            landmark.visibility = 0.9
    np.testing.assert_array_equal(_to_pixels(message.SerializeToString(), 640, 480),
                                  values * np.float32([640, 480, 640]))


def test_rendering_with_its_own_tracking_matches_landmarks_tracked_beforehand(face):
    """`render(frame)` finds the landmarks while it measures the body's motion; the frames must come out the
    same as from `render(frame, track(frame))`, where the landmarks are found first."""
    below = 150.0
    frames = [face] + [swayed_body(similarity_frame(face, (128, 110), shift=(2.0 * t, 0.0)), below, 5.0 * t)
                       for t in np.linspace(0, 1, 5)]
    itself, beforehand = Animator(face, rate=25.0), Animator(face, rate=25.0)
    for frame in frames:
        np.testing.assert_array_equal(itself.render(frame), beforehand.render(frame, beforehand.track(frame)))


def test_a_helper_thread_only_where_render_tracks_itself_and_close_ends_it(face):
    """`render(frame)` works the expression detail out in a thread beside the caller's, on the core MediaPipe has
    just finished with. A caller that passes landmarks tracks elsewhere (or renders a grid on both cores): no
    thread is started there. `close` must end it, or a live session would gather one idle thread per portrait."""
    import threading

    def helpers_started(render) -> list[threading.Thread]:
        before = set(threading.enumerate())
        for frame in (face, similarity_frame(face, (128, 110), shift=(3.0, 0.0))):
            render(frame)
        return [thread for thread in set(threading.enumerate()) - before if thread.name.startswith("vivify-detail")]

    given = Animator(face, rate=25.0)
    assert helpers_started(lambda frame: given.render(frame, given.track(frame))) == []
    given.close()
    itself = Animator(face, rate=25.0)
    helpers = helpers_started(itself.render)
    assert len(helpers) == 1
    itself.close()
    assert not helpers[0].is_alive()


def test_closing_an_animator_twice_is_harmless(face):
    """A caller that closes explicitly and again on the way out (a `finally` after an early close) must not
    crash on MediaPipe's graph, which raises when closed twice."""
    animator = Animator(face, rate=25.0)
    animator.render(face)
    animator.close()
    animator.close()


def test_landmarks_are_collected_once_per_frame_submitted(face):
    """`FaceTracker.collect` returns the landmarks of the frame `submit` handed over, once: a second collect
    (or one without a frame) is a programming error, not the last frame's landmarks again."""
    from vivify.landmarks.facemesh import FaceTracker

    with FaceTracker() as tracker:
        tracker.submit(face)
        assert tracker.collect() is not None
        with pytest.raises(RuntimeError, match=r"^FaceTracker\.collect without a frame submitted$"):
            tracker.collect()


def test_a_face_just_found_reads_as_its_tracking_will(face):
    """The first frame with a face is the motion's reference. Its landmarks are those that tracking gives the
    same frame shown again: found from the detector's box alone, they lay 1% of the eyes' distance away (up to
    8% for a small face in a wide frame), and every later frame moved by that much."""
    from vivify.landmarks.facemesh import FaceTracker

    with FaceTracker() as tracker:
        first = tracker.detect(face)
        tracked = np.mean([tracker.detect(face)[:, :2] for _ in range(4)], axis=0)
    moved = topology.landmarks_apart(tracked, first)
    assert moved < 0.004, moved


def test_the_portrait_driven_by_itself_held_still_stays_itself(face, reference):
    """The portrait's landmarks are measured as the driving frames' are: driven by its own picture, held still,
    the face stays where it is. Measured one way for the photo and the other for the frames, the same face
    read 1% of the eyes' distance apart, and the portrait moved by that much in every frame after the first."""
    animator = Animator(face, rate=25.0)
    for _ in range(6):
        out = animator.render(face)
        moved = np.linalg.norm(animator.last_target[:, :2] - animator.points[:, :2], axis=1).mean()
        assert moved < 0.004 * topology.inter_ocular(reference), moved
    assert np.abs(out.astype(int) - face).mean() < 0.2


def test_each_face_of_a_group_photo_is_measured_as_tracked_on_its_own(face):
    """Two faces side by side: each face's window holds its neighbour too. Each is measured as tracking
    measures it, or kept as found, never swapped for its neighbour."""
    from vivify.landmarks.facemesh import as_tracked

    group = np.ascontiguousarray(np.hstack([face, face]))
    faces = detect_faces(group)
    assert len(faces) == 2
    for points in faces:
        tracked = as_tracked(group, points)
        apart = topology.landmarks_apart(points, tracked)
        assert apart < 0.05, apart


def test_a_small_face_in_a_wide_driving_video_is_tracked():
    """A 1920×1080 driving video whose face is 15% of its height (a half-body shot): MediaPipe's tracking finds
    no face in the whole frame; the tracker finds it with the full-range detector and follows it in a window,
    with the landmarks that tracking the face close up gives."""
    from vivify.demo import driving_frames
    from vivify.landmarks.facemesh import FaceTracker

    offset = np.array([1200, 500])
    differences = []
    with FaceTracker() as close_up, FaceTracker() as wide:
        for frame in driving_frames(seconds=1, fps=25, size=448):
            canvas = np.full((1080, 1920, 3), 150, np.uint8)
            canvas[offset[1]:offset[1] + 448, offset[0]:offset[0] + 448] = frame
            expected, found = close_up.detect(frame), wide.detect(canvas)
            assert found is not None
            differences.append(np.abs(found[:, :2] - offset - expected[:, :2]).mean())
    # The face is 160 px tall: within 2% of it in every frame, and a pixel on average.
    assert max(differences) < 3.2 and np.mean(differences) < 1.0, differences


def test_the_motion_stage_has_no_similarity_before_a_reference(reference):
    from vivify.motion.transfer import MotionTransfer

    motion = MotionTransfer(reference)
    with pytest.raises(RuntimeError, match=r"^MotionTransfer\.to_portrait before a reference is set$"):
        _ = motion.to_portrait
    motion.set_reference(reference)
    assert motion.to_portrait.scale == pytest.approx(1.0)


def test_a_reference_more_open_than_a_closed_mouth_opens_and_shuts_it_with_the_drivers(reference):
    """A reference frame caught with the driver's mouth open, and a portrait whose mouth is closed: the portrait's
    mouth opens as far as the driver's and shuts where the driver's shuts, its lips meeting with the chin and
    lower lip where the portrait has them (they do not rise on and squeeze the lips), also where the driver presses
    its lips together further. Before, it stayed shut until the driver opened past the reference, and then opened
    only by what lay beyond."""
    from vivify.motion.articulation import Articulator, FacePose
    from vivify.motion.transfer import MotionTransfer

    face = Articulator(reference)
    closed = face.landmarks(FacePose(open=0.0))[:, :2]
    unit = topology.inter_ocular(closed)
    motion = MotionTransfer(closed, smoothing=False)
    motion.set_reference(face.landmarks(FacePose(open=0.15)))

    for driver_open in (0.15, 0.25):
        target, _ = motion.target(face.landmarks(FacePose(open=driver_open)))
        assert topology.mouth_gap(target) / unit == pytest.approx(driver_open, abs=0.01)

    lower_face = [topology.LOWER_INNER_LIP, 17, 152]  # the lower lip's inner and outer middle, the chin
    for driver_open in (0.0, -0.05):
        target, _ = motion.target(face.landmarks(FacePose(open=driver_open)))
        np.testing.assert_allclose(target[lower_face], closed[lower_face], atol=0.01 * unit)
        gap = target[topology.LOWER_INNER_LIP, 1] - target[topology.UPPER_INNER_LIP, 1]
        assert gap == pytest.approx(0.0, abs=0.01 * unit)


def test_a_reference_less_open_than_an_open_mouth_shuts_it_with_the_drivers(reference):
    """A portrait whose mouth is open (a smile that shows the teeth) and a reference frame caught with the
    driver's mouth half as open: the portrait's mouth keeps its own opening at the reference, opens on from there,
    and shuts where the driver's shuts. Before, it stayed open by the difference."""
    from vivify.motion.articulation import Articulator, FacePose
    from vivify.motion.transfer import MotionTransfer

    face = Articulator(reference)
    smiling = face.landmarks(FacePose(open=0.12))[:, :2]
    unit = topology.inter_ocular(smiling)
    motion = MotionTransfer(smiling, smoothing=False)
    motion.set_reference(face.landmarks(FacePose(open=0.06)))
    for driver_open, expected in ((0.06, 0.12), (0.16, 0.22), (0.03, 0.06), (0.0, 0.0)):
        target, _ = motion.target(face.landmarks(FacePose(open=driver_open)))
        assert topology.mouth_gap(target) / unit == pytest.approx(expected, abs=0.01), driver_open


def _lips_thinned(points: np.ndarray, share: float) -> np.ndarray:
    """The landmarks with each lip's outer contour moved in towards its inner one, to `share` of its thickness
    (the corners stay)."""
    thinned = points.copy()
    for outer, inner in topology.LIP_CONTOUR_PAIRS:
        thinned[outer] = thinned[inner] + share * (thinned[outer] - thinned[inner])
    return thinned


def _lip_thickness(points: np.ndarray) -> float:
    return float(np.mean([np.linalg.norm(points[outer, :2] - points[inner, :2], axis=1).mean()
                          for outer, inner in topology.LIP_CONTOUR_PAIRS]))


def test_thin_lips_thin_in_proportion_to_their_own_thickness(reference):
    """A portrait whose lips are half as thick as the driver's, and a driver whose lips thin to 60% of theirs (a
    smile stretches them): the portrait's thin to 60% of their own, its inner lips where they were. Before, the
    driver's thinning was added as it was, and left the portrait's lips at a fifth of their thickness (Mona Lisa's
    lower lip came down to a line, its shadow just under the seam, read as parted lips)."""
    from vivify.motion.transfer import MotionTransfer

    portrait = _lips_thinned(reference, 0.5)[:, :2]
    motion = MotionTransfer(portrait, smoothing=False)
    motion.set_reference(reference)
    at_reference, _ = motion.target(reference)
    assert _lip_thickness(at_reference) == pytest.approx(_lip_thickness(portrait), rel=0.01)
    thinned, _ = motion.target(_lips_thinned(reference, 0.6))
    assert _lip_thickness(thinned) / _lip_thickness(portrait) == pytest.approx(0.6, abs=0.03)
    inner = topology.LIPS_INNER
    np.testing.assert_allclose(thinned[inner], portrait[inner], atol=0.005 * topology.inter_ocular(portrait))


def test_eyes_open_and_close_in_proportion_to_their_own_opening(reference):
    """Eyes narrower than the driver's (at 0.4 of its opening, as Trump's photo against d6's driver) narrow by the
    same share as the driver's: a squint to 60% leaves them at 60%, where before it shut them. Eyes wider than
    the driver's (the driver's at 0.6 of theirs) shut at least as far as the driver's (to 27% of its opening),
    where before they stayed 43% open."""
    from vivify.motion.articulation import Articulator, FacePose
    from vivify.motion.transfer import MotionTransfer

    face = Articulator(reference)

    def openness(blink: float) -> float:
        return float(np.mean([eye.openness(face.landmarks(FacePose(blink=blink))) for eye in topology.EYES]))

    def portraits_share(portrait_blink: float, reference_blink: float, driver_blink: float) -> float:
        portrait = face.landmarks(FacePose(blink=portrait_blink))[:, :2]
        motion = MotionTransfer(portrait, smoothing=False)
        motion.set_reference(face.landmarks(FacePose(blink=reference_blink)))
        target, _ = motion.target(face.landmarks(FacePose(blink=driver_blink)))
        return float(np.mean([eye.openness(target) for eye in topology.EYES])) / openness(portrait_blink)

    assert portraits_share(0.6, 0.0, 0.4) == pytest.approx(openness(0.4) / openness(0.0), abs=0.05)
    assert portraits_share(0.0, 0.4, 1.0) <= openness(1.0) / openness(0.4)


def test_a_reference_caught_mid_blink_does_not_open_the_portraits_eyes_into_a_stare(reference):
    """The reference frame catches the driver's eyes shut (a blink), the portrait's are open. Before, the driver's
    opening them again opened the portrait's by as much on top of its own: nearly twice as wide, all clip long.
    Now each eye keeps the portrait's opening until the driver's has settled open, and its changes are measured
    from there: open as the portrait's, half shut, shut. Where the portrait's own eyes are shut as well (its
    own video's first frame, self-reenactment), the reference stands as it is."""
    from vivify.motion.articulation import Articulator, FacePose
    from vivify.motion.transfer import MotionTransfer

    face = Articulator(reference)

    def openness(points: np.ndarray) -> float:
        return topology.LEFT_EYE.openness(points)

    driver = [face.landmarks(FacePose(blink=blink)) for blink in (0.95, 0.95, 0.5, 0.0, 0.0, 0.5, 1.0)]
    own = openness(reference)

    def portraits_eyes(reference_frame: np.ndarray, frames: list[np.ndarray]) -> list[float]:
        motion = MotionTransfer(reference, smoothing=False)
        motion.set_reference(reference_frame)
        return [openness(motion.target(points)[0]) / own for points in frames]

    caught_open, caught_shut = portraits_eyes(driver[3], driver), portraits_eyes(driver[0], driver)
    assert caught_open[3] == pytest.approx(1.0, abs=0.01) and caught_open[6] < 0.2
    # Held at the portrait's own while the driver's are shut and opening (before: 1.9 times it once open); once
    # the driver's have settled open, as with a reference that caught them open.
    assert caught_shut[:5] == pytest.approx([1.0] * 5, abs=0.02)
    assert caught_shut[5:] == pytest.approx(caught_open[5:], abs=0.02)

    # Eyes that stay nearly shut for longer than the first second (the lids settled, a little more open than in
    # the reference) and then open: measured from their first second open, not from before.
    late = [face.landmarks(FacePose(blink=0.9))] * 40 + [face.landmarks(FacePose(blink=0.0))] * 3
    assert portraits_eyes(driver[0], late)[-1] == pytest.approx(1.0, abs=0.02)

    shut_portrait = face.landmarks(FacePose(blink=0.95))[:, :2]
    motion = MotionTransfer(shut_portrait, smoothing=False)
    motion.set_reference(driver[0])
    assert openness(motion.target(driver[4])[0]) == pytest.approx(own, rel=0.1)  # opened, not held shut


def _grid_cell_and_close_up() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut framed as a sing grid's 256² cell, and a 256² close-up of her face as a driving frame: its
    bottom edge cuts her collar, and the cell's chest lies below it."""
    from vivify.compose.grid import frame_portrait, largest_face
    from vivify.demo import astronaut

    full = astronaut()
    cell = frame_portrait(full, (256, 256), largest_face(full, "astronaut"))
    return cell, cv2.resize(full[50:210, 140:300], (256, 256))


def test_a_close_up_driver_moves_the_body_beyond_its_frame_no_further_than_its_own():
    """The driver's face fills the frame, so the portrait's chest (the sing grid's framing) lies below the
    driving frame's bottom edge. There the flow has nothing to measure: the chest goes on as the frame's edge
    moves, no further, and does not slide with a flow drifting over the frame's repeated edge pixels (it once
    smeared up the whole chest) nor fold where the frame's edge cuts the driver's collar."""
    portrait, close_up = _grid_cell_and_close_up()
    animator = Animator(portrait, rate=25.0)
    chest = (slice(215, 256), slice(60, 200))
    before = cv2.cvtColor(portrait[chest], cv2.COLOR_RGB2GRAY).astype(np.float64)
    for t in range(90):
        sway = (4 * np.sin(t / 3), 3 * np.sin(t / 5))  # driving pixels, more than portrait pixels here
        out = animator.render(similarity_frame(close_up, (128, 128), shift=sway))
        (dx, dy), _ = cv2.phaseCorrelate(before, cv2.cvtColor(out[chest], cv2.COLOR_RGB2GRAY).astype(np.float64))
        assert np.hypot(dx, dy) <= np.hypot(*sway) + 0.5, t


def _body_motion(portrait_points: np.ndarray, driver: np.ndarray, driver_points: np.ndarray):
    """The body's flow of a portrait with these landmarks, from this driving reference frame, as `Animator` sets
    it up: over the warp's region, with the driver's person mask, scaled by the faces' similarity. Also returns
    the region."""
    from vivify.motion.body import BodyMotion
    from vivify.render.background import person_mask
    from vivify.render.warp import HeadWarp

    region = HeadWarp((256, 256), portrait_points).region
    body = BodyMotion(np.array([region.x0, region.y0]), region.size)
    body.set_reference(driver, person_mask(driver, [driver_points]),
                       fit_similarity(driver_points[topology.RIGID], portrait_points[topology.RIGID]))
    return body, region


def test_a_turning_close_up_driver_never_folds_the_portraits_chest():
    """Where the driving frame's edge cuts the driver's neck and collar, DIS's patches reach past it into
    repeated edge pixels and once read flows of dozens of pixels there, which folded the portrait's chest over
    itself. Below the chin, where the body's motion rules the warp, p ↦ p + shift·seen keeps every pixel in
    order (on the face the landmarks rule)."""
    portrait, close_up = _grid_cell_and_close_up()
    driver, face = detect_faces(close_up)[0], detect_faces(portrait)[0]
    body, region = _body_motion(face, close_up, driver)
    below_chin = face[152, 1] + 0.15 * np.ptp(face[:, 1]) - region.y0  # the warp's _BODY_BLEND
    xs, ys = np.meshgrid(np.arange(0, region.size[0], 2), np.arange(np.ceil(below_chin), region.size[1], 2))
    points = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)
    for t in range(90):
        shift, seen = body.measure(similarity_frame(close_up, (128, 128), angle=8 * np.sin(t / 5),
                                                    scale=1 + 0.05 * np.sin(t / 7)))(points)
        moved = (points + shift * seen).reshape(*xs.shape, 2)
        (dx_dy, dx_dx), (dy_dy, dy_dx) = np.gradient(moved[..., 0]), np.gradient(moved[..., 1])
        assert (dx_dx * dy_dy - dx_dy * dy_dx > 0).all(), t


def test_the_drivers_outline_around_the_head_is_told_from_another_persons():
    """The body's flow is followed freely around the head only where the driver's outline there is the
    portrait's own: then it was read off the portrait's own shape of hair."""
    from vivify.motion.body import BodyMotion
    from vivify.motion.pose import IDENTITY

    size = (240, 300)
    own = np.zeros(size[::-1], np.float32)
    cv2.circle(own, (120, 130), 80, 1.0, -1)  # the portrait's head with its hair
    frame = np.random.default_rng(0).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
    body = BodyMotion(np.zeros(2), size, head=own[:200])  # the rows above the chin
    assert body.outline_agreement == 1.0  # until a reference says otherwise
    body.set_reference(frame, own, IDENTITY)
    assert body.outline_agreement == 1.0
    other = np.zeros_like(own)
    cv2.circle(other, (120, 150), 62, 1.0, -1)  # another person: a smaller head, lower
    body.set_reference(frame, other, IDENTITY)
    assert body.outline_agreement == 0.0


@pytest.mark.parametrize("follows", [0.0, 1.0])
def test_hair_strays_from_the_head_only_as_far_as_the_outlines_agree(face, reference, follows):
    """The driver's flow says that everything beyond the face moves 20 px up while the head stays. Where the
    driver's outline is another's (`hair_follows_body` 0), the hair above the eyes stays with the head, within
    0.05 face heights; the body below the chin follows the flow either way."""
    from vivify.motion.pose import IDENTITY
    from vivify.render.warp import HeadWarp

    warp = HeadWarp(face.shape[1::-1], reference)

    def flow(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.tile(np.float32([0.0, 20.0]), (len(points), 1)), np.ones((len(points), 1), np.float32)

    source_map, _, _ = warp.maps(reference, IDENTITY, body=flow, hair_follows_body=follows)
    face_height = float(np.ptp(reference[:, 1]))
    x0, y0 = warp.region.x0, warp.region.y0
    middle = round(reference[1, 0])
    hair, body = round(reference[10, 1] - 0.3 * face_height), round(reference[152, 1] + 0.5 * face_height)
    above = source_map[hair - y0, middle - x0] - [middle, hair]
    below = source_map[body - y0, middle - x0] - [middle, body]
    assert below == pytest.approx([0.0, 20.0], abs=0.5)
    if follows:
        assert above == pytest.approx([0.0, 20.0], abs=0.5)
    else:
        assert np.hypot(*above) <= 0.05 * face_height + 0.5


def test_the_bodys_first_flow_reaches_a_motion_far_from_the_reference(face):
    """A reference picked later in the clip (`--reference best`) can lie far from the first frame rendered,
    whose flow has no previous one to start from. One pass of DIS fell short there (2 px off a 41 px shift,
    and a painted portrait's hair smeared for five frames); the first measurement now reads the motion as
    well as the same frame seen again does."""
    points = detect_faces(face)[0]
    body, region = _body_motion(points, face, points)
    xs, ys = np.meshgrid(np.arange(0, region.size[0], 4), np.arange(0, region.size[1], 4))
    cells = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)
    shift, seen = body.measure(similarity_frame(face, (128, 128), shift=(40.0, 10.0)))(cells)
    on_person = seen[:, 0] > 0.99
    assert on_person.mean() > 0.3
    # The frame moved 40 px right and 10 down: an output pixel shows what the portrait has 40 px left, 10 up.
    assert np.median(np.linalg.norm(shift[on_person] - [-40.0, -10.0], axis=1)) < 0.5


def test_closed_lips_cover_whatever_the_warp_took_from_between_the_source_lips(reference):
    """A wide-open mouth squeezed shut (a dub's silence over a laugh) leaves teeth at its corners, on the lips
    beyond the thin gap that is left. Where the warp is known, every pixel it took from between the source's
    lips is painted over with the lips' colour."""
    from vivify.render.lips import close_lips

    source = np.hstack([2.0 * reference, np.zeros((len(reference), 1))])  # the astronaut's open smile, at 512²
    target = source.copy()
    inner = target[topology.LIPS_INNER, 1]
    target[topology.LIPS_INNER, 1] = inner.mean() + 0.05 * (inner - inner.mean())  # her lips closed
    frame = np.full((512, 512, 3), (200, 160, 140), np.uint8)  # skin
    outer = np.round(target[topology.LIPS_OUTER, :2]).astype(np.int32)
    cv2.fillPoly(frame, [outer], (170, 50, 60))  # the lips
    upper = np.round(target[40, :2]).astype(int)  # on the upper lip, beside the corner of the mouth
    teeth = (slice(upper[1], upper[1] + 2), slice(upper[0] - 1, upper[0] + 2))
    frame[teeth] = 240

    def seen(box):  # the warp took those pixels from between the source's lips
        x0, y0, x1, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        mask[teeth[0].start - y0:teeth[0].stop - y0, teeth[1].start - x0:teeth[1].stop - x0] = 1.0
        return mask

    plain, covered = frame.copy(), frame.copy()
    close_lips(plain, source, target)
    close_lips(covered, source, target, seen)
    assert plain[teeth].min() == 240  # beyond the gap's band: left as it was
    assert covered[teeth][..., 0].max() < 200 and covered[teeth][..., 1].max() < 100  # lip-coloured


def test_the_expression_detail_paints_no_feature_the_portrait_has_not():
    """The ratio image carries changes of shading. A feature of the driver's own (eyeliner, a brow) that sits
    a few pixels apart in its two frames would show as a dark and a bright streak: where the portrait does not
    have that feature, the detail leaves it out; where the feature is the portrait's own (self-reenactment),
    it is kept, painting the feature where it moved."""
    from vivify.demo import face_crop
    from vivify.render.detail import FeatureAgreement, detail_gain, feature_lightness, shading

    face = face_crop(256)
    points = detect_faces(face)[0]
    # A short line between the brows, where the portrait has plain skin.
    brow = int(points[topology.LEFT_EYE.contour, 1].min()) - 12
    middle = int(points[[*topology.LEFT_EYE.contour, *topology.RIGHT_EYE.contour], 0].mean())
    across = slice(middle - 12, middle + 12)

    def with_line(row: int) -> np.ndarray:
        image = face.copy()
        image[row:row + 3, across] = 30
        return image

    reference, frame = with_line(brow), with_line(brow + 4)  # the driver's line moved down by 4 px
    grid = np.stack(np.meshgrid(np.arange(256, dtype=np.float32), np.arange(256, dtype=np.float32)), axis=-1)
    span = topology.inter_ocular(points)

    def gain(portrait: np.ndarray | None) -> np.ndarray:
        features = None if portrait is None else (
            FeatureAgreement(feature_lightness(portrait, span), (0, 0), feature_lightness(reference, span), grid,
                             span), grid)
        return detail_gain((0, 0), (0, 0, 256, 256), points, shading(frame, span), shading(reference, span), grid, grid,
                           1.0, features=features)

    def streak(g: np.ndarray) -> float:  # how far the gain strays from 1 along the line
        return float(np.abs(g[brow - 2:brow + 8, across] - 1.0).max())

    assert streak(gain(None)) > 0.2  # without the check: the streak
    assert streak(gain(face)) < 0.05  # the portrait has no such line: left out
    assert streak(gain(reference)) > 0.2  # the line is the portrait's own: kept


def test_hair_that_swings_over_the_drivers_forehead_is_not_carried_as_shading():
    """A lock of the driver's hair that falls over the forehead since the reference darkened the ratio to its
    clamp there: the portrait's forehead showed a grey smudge the shape of the driver's fringe. On the
    forehead, a ratio so dark that only hair falling over it explains it is left out, with its surroundings; a
    shadow there, and a mouth that opens dark, are still carried."""
    from vivify.demo import face_crop
    from vivify.render.detail import detail_gain, shading

    face = face_crop(512)
    points = detect_faces(face)[0]
    span = topology.inter_ocular(points)
    top = int(points[10, 1]) + 4
    brows = int(points[[*topology.LEFT_BROW, *topology.RIGHT_BROW], 1].min()) - 4
    left, right = int(points[topology.LEFT_EYE.contour, 0].min()), int(points[topology.RIGHT_EYE.contour, 0].max())
    lock = (slice(top, brows), slice(left, left + (right - left) // 4))
    shadow = (slice(top, brows), slice(right - (right - left) // 4, right))
    lips = points[topology.LIPS_INNER, :2]
    frame = face.copy()
    frame[lock] = 25
    frame[shadow] = (frame[shadow] * 0.85).astype(np.uint8)
    cv2.fillPoly(frame, [np.round(lips).astype(np.int32)], (20, 10, 10))  # the mouth's slit, opened dark
    grid = np.stack(np.meshgrid(np.arange(512, dtype=np.float32), np.arange(512, dtype=np.float32)), axis=-1)
    gain = detail_gain((0, 0), (0, 0, 512, 512), points, shading(frame, span), shading(face, span), grid, grid, 1.0)

    def inner(area: tuple[slice, slice]) -> np.ndarray:
        rows, cols = area
        return gain[rows.start + 3:rows.stop - 3, cols.start + 3:cols.stop - 3, 0]

    assert np.abs(inner(lock) - 1.0).max() < 0.03  # before: 0.75, the clamp
    assert 0.82 < np.median(inner(shadow)) < 0.92
    middle = np.round(lips.mean(axis=0)).astype(int)
    assert gain[middle[1], middle[0], 0] == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("corner", [(150, 90), (-40, -25), (330, 240), (-900, 60), (900, 400)],
                         ids=["inside", "over the top left", "over the bottom right", "all left of the frame",
                              "all right of and below the frame"])
def test_the_driving_frames_shading_is_made_only_where_the_detail_reads_it(corner):
    """The expression detail samples the driving frame's shading through a map of the face; the shading is made
    only over what that map reads, and samples as the whole frame's does, where it reads beyond the frame too."""
    from vivify.demo import astronaut
    from vivify.render.detail import shading, shading_under

    frame = cv2.resize(astronaut(), (400, 300))
    span = 200.0  # a blur of 9 pixels
    rows, cols = np.mgrid[0:60, 0:80].astype(np.float32)
    # A sheared, scaled face box with fractional positions: every sample falls between pixels.
    frame_map = np.dstack([cols * 1.3 + rows * 0.2 + corner[0] + 0.37, rows * 0.9 + corner[1] + 0.61])
    part, moved = shading_under(frame, span, frame_map)

    def sample(image: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return cv2.remap(image, positions, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    assert np.array_equal(sample(part, moved), sample(shading(frame, span), frame_map))
    assert part.size < frame.shape[0] * frame.shape[1] / 3


def test_tracking_ahead_ends_when_its_consumer_stops_after_the_last_frame():
    """The consumer of the (frame, landmarks) pairs stops (an error, Ctrl-C) once the tracking thread has read
    every frame into a full queue: closing the pairs still ends that thread, which used to wait for ever to
    queue the end of the frames (a render stopped near its end hung)."""
    read_all = threading.Event()

    def frames():
        yield from (np.zeros((2, 2, 3), np.uint8) for _ in range(2))
        read_all.set()

    pairs = pipeline.tracked(frames(), lambda frame: None, depth=1)
    next(pairs)  # the second frame fills the queue
    read_all.wait()
    closing = threading.Thread(target=pairs.close, daemon=True)
    closing.start()
    closing.join(timeout=60)  # guards the test run against the hang; ends in a tenth of a second
    assert not closing.is_alive()


def test_a_wait_for_the_lab_tables_cut_short_by_ctrl_c_still_lets_the_exit_wait_for_them(monkeypatch):
    """Ctrl-C while a frame waits for OpenCV's Lab tables: their thread is still seen as running, so the exit
    waits for it (a process torn down under OpenCV aborts: `dub` stopped at its first frames did)."""
    release = threading.Event()
    convert = cv2.cvtColor

    def slow_tables(*args):
        release.wait()
        return convert(*args)

    interrupted = threading.Event()

    def on_sigint(signum, frame):
        if not interrupted.is_set():  # the first Ctrl-C only: more may come before the interrupter sees it
            interrupted.set()
            raise KeyboardInterrupt

    def waiting_for_the_tables(frame) -> bool:
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        # Inside the call that waits: below `_wait_for_lab_tables`, past starting the thread.
        return "_wait_for_lab_tables" in names[1:] and "build_lab_tables" not in names

    def interrupt_the_wait():
        main_thread = threading.main_thread().ident
        while not waiting_for_the_tables(sys._current_frames()[main_thread]):
            pass
        # Again until it is seen: a signal that comes just before the wait blocks is only handled once the
        # wait ends, which here is never.
        while not interrupted.is_set():
            signal.pthread_kill(main_thread, signal.SIGINT)
            interrupted.wait(0.01)

    monkeypatch.setattr(interior, "_lab_tables", None)
    monkeypatch.setattr(interior, "_lab_tables_built", threading.Event())
    monkeypatch.setattr(cv2, "cvtColor", slow_tables)
    interior.build_lab_tables()  # as an animator starts them
    previous = signal.signal(signal.SIGINT, on_sigint)
    interrupter = threading.Thread(target=interrupt_the_wait, daemon=True)
    try:
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            interior._wait_for_lab_tables()
    finally:
        interrupter.join()  # no Ctrl-C of its may reach the handler put back
        signal.signal(signal.SIGINT, previous)
    tables = interior._lab_tables
    try:
        assert tables.is_alive()
    finally:
        release.set()
        tables.join()


def test_a_carried_mouth_fills_a_taller_opening_with_the_drivers_interior_not_its_lips(face, reference):
    """The target's opening can be taller for its lips than the driver's (a portrait that shows its teeth, a jaw
    dropped further than the driver's from its reference): the driver's interior is stretched across it to the
    target's lips, and none of the driver's lip shows inside it (a band that read as a tongue or as shut lips)."""
    from vivify.render.interior import MOUTH, InteriorPainter

    portrait = np.hstack([2.0 * reference, np.zeros((len(reference), 1))])
    picture = cv2.resize(face, (512, 512), interpolation=cv2.INTER_CUBIC)
    frame = picture.copy()  # the driver, as open as the portrait: pale lips around a dark cavity
    cv2.fillPoly(frame, [np.round(portrait[topology.LIPS_OUTER, :2]).astype(np.int32)], (200, 150, 150))
    cv2.fillPoly(frame, [np.round(portrait[topology.LIPS_INNER, :2]).astype(np.int32)], (30, 10, 10))
    target = portrait.copy()  # the lower lip dropped by 30 px (0.17 eye spans), as thick as before
    corners = [61, 291, 78, 308]
    lower = [i for i in (*topology.LIPS_OUTER[:11], *topology.LIPS_INNER[:11]) if i not in corners]
    target[lower, 1] += 30
    out = picture.copy()
    InteriorPainter(MOUTH, portrait).paint(out, target, frame, portrait)
    opening = np.zeros(picture.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(target[topology.LIPS_INNER, :2]).astype(np.int32)], 1)
    opening = cv2.erode(opening, np.ones((7, 7), np.uint8)) > 0
    lightness = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0].astype(float)
    lips = np.zeros(picture.shape[:2], np.uint8)
    cv2.fillPoly(lips, [np.round(portrait[topology.LIPS_OUTER, :2]).astype(np.int32)], 1)
    cv2.fillPoly(lips, [np.round(portrait[topology.LIPS_INNER, :2]).astype(np.int32)], 0)
    # Recoloured, the driver's lips take the portrait's lips' tones.
    lips_lightness = cv2.cvtColor(picture, cv2.COLOR_RGB2LAB)[..., 0][lips > 0].mean()
    assert opening.sum() > 500
    assert np.mean(lightness[opening] > 0.5 * lips_lightness) < 0.02


def test_carried_teeth_stand_out_from_smooth_lips_as_from_the_drivers(reference):
    """The driver's teeth stand out from its lips by as much, relative to the lips' lightness, on a portrait whose
    lips are smoother than the driver's: matched on the lips' spread alone, they were dimmed to the lips' tone,
    and the open mouth read as closed."""
    from vivify.render.interior import MOUTH, InteriorPainter

    opening = np.array([[20, 30], [50, 24], [80, 30], [50, 36]], np.float32)
    surround = np.array([[10, 30], [50, 14], [90, 30], [50, 46]], np.float32)
    driver = np.zeros((60, 100, 3), np.uint8)
    driver[::2], driver[1::2] = (215, 135, 135), (125, 65, 65)  # textured lips in stripes
    cv2.fillPoly(driver, [opening.astype(np.int32)], (240, 240, 235))  # teeth
    portrait = np.full((60, 100, 3), (150, 85, 85), np.uint8)  # smooth lips, a little darker than the driver's
    out = InteriorPainter(MOUTH, reference)._recolour(driver, portrait, surround, opening)

    inside, ring = interior._ring(driver.shape[:2], surround, opening)
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8))
    driver_l, portrait_l, out_l = (cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 0].astype(float)
                                   for image in (driver, portrait, out))
    driver_lips, portrait_lips = driver_l[ring > 0].mean(), portrait_l[ring > 0].mean()
    stands_out = (driver_l[inside > 0].mean() - driver_lips) / driver_lips
    # Matched on the spread alone, they stood out by 0.61 where the driver's do by 0.90 (now 0.88).
    assert (out_l[inside > 0].mean() - portrait_lips) / portrait_lips > 0.9 * stands_out


def test_a_head_that_comes_down_to_the_bodys_edge_does_not_fold_the_jaw(reference):
    """The frame's bottom edge cuts the collar 30 px under the chin and the head comes down 40 px (the driver leans
    in or nods). The edge below the chin goes down with it: pinned there, the jaw folded against it (the map's
    Jacobian fell to -0.77 under the chin; 0.81 now) and pulled the collar up into the chin."""
    from vivify.motion.pose import Similarity
    from vivify.render.warp import HeadWarp

    chin = math.ceil(float(reference[:, 1].max()))
    warp = HeadWarp((256, chin + 30), reference)
    assert (warp.fixed[:, 1] >= chin + 29).any()  # the body's edge is pinned under the chin
    down = Similarity(1.0, 0.0, np.array([0.0, 40.0]))
    source_map, _, _ = warp.maps(down.apply(reference), down)
    x, y = np.gradient(source_map[..., 0]), np.gradient(source_map[..., 1])  # each: d/d(row), d/d(column)
    jacobian = x[1] * y[0] - x[0] * y[1]
    column = round(reference[152, 0]) - warp.region.x0
    under_chin = jacobian[round(reference[152, 1]) - warp.region.y0:, max(0, column - 40):column + 40]
    assert under_chin.min() > 0.5
