"""`Animator`: the streaming engine that every command drives, one driving frame at a time."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from vivify.errors import VivifyError
from vivify.landmarks.facemesh import NUM_LANDMARKS, FaceTracker, as_tracked, detect_faces, face_size
from vivify.landmarks.topology import inter_ocular
from vivify.motion.body import BodyMotion, BodyShift
from vivify.motion.pose import IDENTITY
from vivify.motion.transfer import EASE_FRAMES, MotionTransfer
from vivify.render.background import background_plate, person_mask, unmix_foreground
from vivify.render.detail import FeatureAgreement, apply_detail, detail_gain, feature_lightness, shading, shading_under
from vivify.render.eyelid import EyelidPainter, limit_lid_travel
from vivify.render.interior import LEFT_EYE, MOUTH, RIGHT_EYE, InteriorPainter, build_lab_tables
from vivify.render.lips import close_lips
from vivify.render.patch import Box
from vivify.render.resample import resample
from vivify.render.warp import HeadWarp

MIN_FACE_PIXELS = 48


def check_face_size(points: np.ndarray, name: str) -> None:
    """Refuse a face (its landmarks) under MIN_FACE_PIXELS tall: too few pixels to animate."""
    if face_size(points) < MIN_FACE_PIXELS:
        raise VivifyError(f"{name}: face is {face_size(points):.0f} px tall, under the minimum of {MIN_FACE_PIXELS} px")


class _Missing:
    """The type of `_MISSING`: "not given", where None already means "no face in this frame"."""


_MISSING = _Missing()
# How far beyond the frame's edges the photo is mirrored (face sizes): further than the head and body travel.
_BEYOND_THE_EDGE = 0.5
# The band around the face's landmarks (face heights) that the mirror beyond the top and bottom edges keeps out of.
_FACE_MARGIN = 0.05
# The least band (face heights) that the mirror folds within above the head: hair or a forehead cut close by the
# top edge would otherwise repeat a row or two into streaks. Above the eyebrows still.
_FOLD_ABOVE = 0.1
# How far in from an edge, and over how long a stretch of it (face heights), the person's colour is compared
# with the plate's, and the mean difference (0..255) under which the two are alike, and over which the person
# stands out. The stretch is long: behind hair the plate is made up, and can be of the hair's colour in places.
_EDGE_DEPTH, _EDGE_STRETCH = 0.03, 0.15
_PLATE_LIKE, _STANDS_OUT = 20.0, 30.0
_DETAIL_EYE_SPAN = 120.0


class Animator:
    """Animates one face of a portrait from driving frames.

    >>> animator = Animator(portrait_rgb)            # H×W×3 uint8
    >>> frame_out = animator.render(driving_rgb)     # H×W×3 uint8, the portrait's size

    The first frame rendered is the reference (the driver's neutral pose and expression) unless
    `reference` gives one. Later driving frames may have another size: they are scaled to the reference frame's
    height (the same view at another resolution). Making an animator limits NumPy's linear algebra (BLAS) to
    one thread in this process (see `_single_threaded_blas`). Options:
      face: which face of the portrait, largest first (0).
      reference: a driving frame (RGB uint8) to use as the reference instead of the first rendered.
      absolute: give the portrait the driver's face shape instead of applying only the driver's changes.
      smoothing: filter landmark noise over time (One-Euro); turn off only to study raw motion.
      interiors: paint the mouth and eye interiors from the driving frame when they open wider than the
        portrait's own (and the mouth's whenever the driver shows one).
      detail: carry the driver's wrinkles and shading changes over as a clamped ratio image.
      body: move the hair, neck and body around the face as the driver's move (optical flow of the driving
        video); without it they follow only the head's pose. Off by itself where the portrait has several
        faces, and for driving frames of another shape than the reference frame.
      rate: driving frame rate (frames/s), which sets the time constants of the filters.
      name: how error messages call the portrait (its file name).
      detected: the portrait's faces as `detect_faces` gives them, where the caller has found them already
        (several animators of one group photo); else they are found here.
    """

    def __init__(self, portrait: np.ndarray, *, face: int = 0, reference: np.ndarray | None = None,
                 absolute: bool = False, smoothing: bool = True, interiors: bool = True, detail: bool = True,
                 body: bool = True, rate: float = 30.0, name: str = "portrait",
                 detected: Sequence[np.ndarray] | None = None) -> None:
        portrait = _check_rgb(portrait, name)
        _single_threaded_blas()
        build_lab_tables()  # in the background, while the portrait is analysed
        faces = detect_faces(portrait) if detected is None else list(detected)
        if not faces and min(portrait.shape[:2]) < MIN_FACE_PIXELS:  # `--size 2x2`: too small to hold one
            raise VivifyError(f"{name}: at {portrait.shape[1]}x{portrait.shape[0]} no face can reach the minimum "
                              f"of {MIN_FACE_PIXELS} px: make the output larger")
        if not faces:
            raise VivifyError(f"no face found in {name}")
        if not 0 <= face < len(faces):
            raise VivifyError(f"{name}: face {face} requested but only {len(faces)} found (faces count from 0)")
        self.faces_found = len(faces)
        check_face_size(faces[face], name)
        self.portrait = portrait
        # The face is measured as the driving frames will be (`as_tracked`) in a thread of its own while the
        # person is cut out, which needs no more than the face as found.
        with ThreadPoolExecutor(1, thread_name_prefix="vivify-measure") as measuring:
            tracked = measuring.submit(as_tracked, portrait, faces[face])
            mask = person_mask(portrait, faces, face)
            alpha_8bit = np.round(mask * 255).astype(np.uint8)
            foreground, alpha_8bit, plate = unmix_foreground(
                portrait, alpha_8bit, background_plate(portrait, alpha_8bit))
            points = self.points = tracked.result()
        self._plate = np.dstack([plate, np.full(mask.shape, 255, np.uint8)])
        pad = self._pad = max(1, round(_BEYOND_THE_EDGE * face_size(points)))
        self._layers = _beyond_the_edges(foreground, alpha_8bit, plate, points, pad)
        # For the detail to tell the portrait's own features from the driver's.
        self._lightness = feature_lightness(self._layers, inter_ocular(points))
        self._agreement: FeatureAgreement | None = None
        self._reference_shading: np.ndarray | None = None
        self._warp = HeadWarp((portrait.shape[1], portrait.shape[0]), points)
        region = self._warp.region
        # The person over the region, where the portrait shows it and where the last frame moved it (`coverage`).
        self._own_person = alpha_8bit[region.slices].copy()
        self._moved_person = self._own_person
        # With several faces in the portrait, each face's region reaches its neighbours, which the one driver's
        # body motion would pull about: there the faces move with their own heads only.
        head = self._layers[pad:pad + portrait.shape[0], pad:pad + portrait.shape[1], 3][region.slices]
        chin = math.ceil(points[:, 1].max())
        head = head[:max(0, chin - region.y0)].astype(np.float32) / 255.0  # the rows above the chin
        self._body = (BodyMotion(np.array([region.x0, region.y0]), region.size, head)
                      if body and len(faces) == 1 else None)
        self._motion = MotionTransfer(points, rate=rate, absolute=absolute, smoothing=smoothing)
        features = (MOUTH, LEFT_EYE, RIGHT_EYE) if interiors else ()
        self._interiors = [InteriorPainter(feature, points, portrait if feature is MOUTH else None)
                           for feature in features]
        self._eyelids = EyelidPainter(points)
        self._tracker: FaceTracker | None = None  # made on first use: a grid tracks once for all its animators
        self._closed = False
        self._body_trust = 1.0  # how far the body's flow is followed (`_trusted`)
        self.frames_with_face = 0
        self._detail = detail
        # One thread beside the caller's, started when first needed: it works out the expression detail while
        # `render` composites, where `render` tracks the face itself.
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="vivify-detail")
        self._reference_frame: np.ndarray | None = None
        if reference is not None:
            self.set_reference(reference)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames this animator renders."""
        return self.portrait.shape[1], self.portrait.shape[0]

    @property
    def region(self) -> tuple[slice, slice]:
        """(rows, columns) of the portrait that rendering may change; the rest stays the portrait's own."""
        return self._warp.region.slices

    def coverage(self) -> np.ndarray:
        """How far each pixel of the region (`region`) is this face's person in the last frame rendered, where the
        person is now or where the portrait showed it (uint8, 255 for all of it): the pixels that only this
        animator renders as they should be. A render of another face of the same photo shows the photo there,
        this person where it was (`vivify.compose.group`). Before the first frame, the portrait's person."""
        return cv2.max(self._moved_person, self._own_person)

    def set_reference(self, frame: np.ndarray | None, landmarks: np.ndarray | None = None) -> None:
        """Recalibrate: this driving frame's pose and expression become the portrait's own (a mouth more open than
        the portrait's opens the portrait's as far). `landmarks` are the frame's, where the caller has them
        already (from `track`); landmarks alone (frame None) will do for a face made without a picture (speech)."""
        if frame is None and landmarks is None:
            raise ValueError("set_reference needs a frame or landmarks")
        points = landmarks if landmarks is not None else self._detect(_check_rgb(frame, "reference frame"))
        if points is None:
            raise VivifyError("no face found in the reference frame")
        self._calibrate(points, frame)

    def _calibrate(self, points: np.ndarray, frame: np.ndarray | None) -> None:
        """Make these driving landmarks, and their picture where there is one, the reference of the motion, the
        body's flow and the expression detail."""
        self._motion.set_reference(points)
        self._reference_frame = None if frame is None else frame.copy()
        # What the expression detail compares each frame with.
        self._agreement, self._reference_shading = None, None
        if frame is not None and self._detail:
            self._agreement = self._feature_agreement(frame, points)
            self._reference_shading = shading(frame, inter_ocular(points))
        if self._body is not None and self._reference_frame is not None:
            person = person_mask(self._reference_frame, [self._motion.reference])
            self._body.set_reference(self._reference_frame, person, self._motion.to_portrait)

    def _feature_agreement(self, frame: np.ndarray, points: np.ndarray) -> FeatureAgreement:
        """The driver's reference face, warped onto the portrait's own face, against the portrait."""
        _, (x0, y0, _, _), driving_maps = self._warp.maps(self._warp.points, IDENTITY, driving=(points,))
        (reference_map,) = driving_maps()
        rows, cols = self._warp.region.slices
        corner = (cols.start + x0 + self._pad, rows.start + y0 + self._pad)  # in the padded portrait
        return FeatureAgreement(self._lightness, corner, feature_lightness(frame, inter_ocular(points)),
                                reference_map, inter_ocular(self.points))

    def track(self, frame: np.ndarray) -> np.ndarray | None:
        """Landmarks of the driving face in `frame` (478×3), or None where it is lost.

        Frames must be tracked in order. `render(frame)` does this itself; a caller may instead track in
        another thread, ahead of rendering, and pass the result to `render(frame, landmarks)`.
        """
        return self._detect(_check_rgb(frame, "driving frame"))

    def _detect(self, frame: np.ndarray) -> np.ndarray | None:
        return self._ensure_tracker().detect(frame)

    def _ensure_tracker(self) -> FaceTracker:
        if self._closed:
            raise RuntimeError("this Animator is closed: it renders and tracks no more frames")
        if self._tracker is None:
            self._tracker = FaceTracker()
        return self._tracker

    def render(self, frame: np.ndarray | None, landmarks: np.ndarray | _Missing | None = _MISSING) -> np.ndarray:
        """The portrait animated by one driving frame (RGB uint8), with its landmarks from `track` if given.

        With landmarks and no frame (None), the face follows the landmarks alone: nothing of a driving picture
        is carried over, and an opened mouth shows a synthetic interior.
        """
        if frame is None and landmarks is _MISSING:
            raise ValueError("render needs a frame or landmarks")
        if self._closed:
            raise RuntimeError("this Animator is closed: it renders and tracks no more frames")
        if frame is not None:
            frame = _check_rgb(frame, "driving frame")
        if landmarks is not _MISSING and landmarks is not None:
            landmarks = _check_landmarks(landmarks)
        frame, landmarks = self._at_reference_size(frame, landmarks)
        tracker = self._ensure_tracker() if landmarks is _MISSING else None
        if tracker is not None:
            tracker.submit(frame)
        # The body's motion needs no landmarks: it is measured while MediaPipe finds them, on the other core.
        body = self._body_motion(frame)
        out = self.portrait.copy()
        driving = tracker.collect() if tracker is not None else landmarks
        self.frames_with_face += driving is not None
        if driving is not None and self._motion.reference is None:
            # The first face seen becomes the reference.
            self._calibrate(driving, frame)
        self.last_target, head_motion = self._motion.target(driving)
        if body is None:  # the reference may have been set by this very frame
            body = self._body_motion(frame)
        body = self._trusted(body, driving is not None)
        # The warp closes an eye only part of the way (it cannot fold the opening away); the eyelid painter
        # draws the rest of a blink at full resolution.
        warp_target = limit_lid_travel(self.last_target, self.points)
        # After `_calibrate`: the reference, and its shading, may have been set by this very frame.
        use_detail = self._reference_shading is not None and frame is not None and driving is not None
        source_map, face_box, driving_maps = self._warp.maps(
            warp_target, head_motion, source_offset=self._pad,
            driving=(driving, self._motion.reference) if use_detail else (), body=body,
            helper=self._helper if tracker is not None else None,  # as for the detail, below
            hair_follows_body=self._body.outline_agreement if self._body is not None else 1.0)
        rows, cols = self._warp.region.slices
        origin = (cols.start, rows.start)
        detail: Callable[[], np.ndarray] | None = None
        if use_detail:
            # The ratio holds no finer detail than the driving face, and wrinkles need no more than
            # _DETAIL_EYE_SPAN px between the eyes: it is worked out at that size.
            target_span = inter_ocular(self.last_target)
            scale = min(1.0, inter_ocular(driving) / target_span, _DETAIL_EYE_SPAN / target_span)
            x0, y0, x1, y1 = face_box
            features = (self._agreement, source_map[y0:y1, x0:x1])
            detail = functools.partial(_detail_gain, driving_maps, origin, face_box, warp_target, frame,
                                       inter_ocular(self._motion.reference), self._reference_shading, features,
                                       scale)
            if tracker is not None:
                # The core that MediaPipe worked on is free now: the helper thread works the detail out there
                # (it reads only the driving frames) while the portrait is warped and composited here. A caller
                # that passes landmarks tracks in a thread of its own, or renders several animators at once:
                # there the cores are busy, and a hand-off would only cost.
                detail = self._helper.submit(detail).result
        warped = resample(self._layers, source_map, face_box)
        self._moved_person = cv2.extractChannel(warped, 3)
        alpha = self._moved_person.astype(np.float32)
        alpha *= 1.0 / 255.0
        # Blend four channels against a four-channel plate: no strided copy to drop the mask channel first.
        region = cv2.blendLinear(warped, self._plate[rows, cols], alpha, 1.0 - alpha)
        out[rows, cols] = cv2.cvtColor(region, cv2.COLOR_RGBA2RGB)  # a SIMD copy, not a strided gather
        if detail is not None:
            apply_detail(out, origin, face_box, detail())
        for painter in self._interiors:
            painter.paint(out, self.last_target, frame, driving if frame is not None else None)
        close_lips(out, self.points, self.last_target)
        self._eyelids.paint(out, self.last_target, warp_target)
        return out

    def _at_reference_size(self, frame: np.ndarray | None, landmarks: np.ndarray | _Missing | None,
                           ) -> tuple[np.ndarray | None, np.ndarray | _Missing | None]:
        """A driving frame of another height than the reference frame (a stream that changes its resolution), and
        its landmarks, scaled to the reference frame's height: the motion is measured in its pixels, and the same
        face at another resolution read as a head that came closer or went away. The view is taken to keep its
        height: a frame of another shape (a wider or narrower crop) also keeps its width."""
        reference = self._reference_frame
        if frame is None or reference is None or frame.shape[0] == reference.shape[0]:
            return frame, landmarks
        scale = reference.shape[0] / frame.shape[0]
        size = (max(1, round(frame.shape[1] * scale)), reference.shape[0])
        resized = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if isinstance(landmarks, np.ndarray):
            landmarks = landmarks * scale
        return resized, landmarks

    def _body_motion(self, frame: np.ndarray | None) -> BodyShift | None:
        """The driver's motion around the face in this frame (at region points), where there is a picture to
        read it from: measured whether or not the face is found (each frame's flow starts from the previous
        frame's); `_trusted` says how far it is followed."""
        reference = self._reference_frame
        if self._body is None or frame is None or reference is None or frame.shape != reference.shape:
            return None
        return self._body.measure(frame)

    def _trusted(self, body: BodyShift | None, face_found: bool) -> BodyShift | None:
        """The body's motion as far as it is trusted. While the driving face is lost the body holds with the
        head: what the frame shows then may be no person at all (a camera's pan, a cut), and a flow that
        follows it tore the portrait apart. When the face is back, the flow comes back in as the head eases
        back (over EASE_FRAMES)."""
        self._body_trust = min(1.0, self._body_trust + 1.0 / EASE_FRAMES) if face_found else 0.0
        trust = self._body_trust
        if body is None or trust >= 1.0:
            return body
        if trust == 0.0:
            return None
        measured = body

        def eased(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            shift, seen = measured(points)
            return shift, seen * trust

        return eased

    def close(self) -> None:
        """End the helper thread and the face tracker. The animator renders no more frames after it; closing it
        again does nothing (MediaPipe's graph raises if closed twice)."""
        self._closed = True
        self._helper.shutdown()
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker.close()


@functools.cache
def _single_threaded_blas() -> None:
    """Limit BLAS to one thread, for the rest of the process.

    The engine's matrices are small (a spline system of about 150 controls): a second BLAS thread speeds none
    of them up, and OpenBLAS keeps its idle threads spinning (`sched_yield`) for a while after each call, which
    on two cores takes the core that MediaPipe and the detail thread work on: 1.3–1.7 ms of a 512² frame."""
    threadpool_limits(1, user_api="blas")


def _detail_gain(driving_maps: Callable[[], list[np.ndarray]], origin: tuple[int, int], box: Box,
                 target: np.ndarray, frame: np.ndarray, eye_span: float, reference: np.ndarray,
                 features: tuple[FeatureAgreement, np.ndarray], scale: float) -> np.ndarray:
    """The expression detail's gain, with the maps of the face into the driving frame and the reference frame
    assembled first and the driving frame's shading made where its map reads (in the helper thread, like the
    gain). `eye_span` is the driver's reference face's, whose `shading` `reference` is."""
    frame_map, reference_map = driving_maps()
    frame_shading, frame_map = shading_under(frame, eye_span, frame_map)
    return detail_gain(origin, box, target, frame_shading, reference, frame_map, reference_map, scale=scale,
                       features=features)


def _beyond_the_edges(foreground: np.ndarray, alpha_8bit: np.ndarray, plate: np.ndarray, points: np.ndarray,
                      pad: int) -> np.ndarray:
    """The person's colour and mask (H×W×4) padded by `pad` on every side with what the warp pulls in from beyond
    the frame when the person moves away from an edge.

    The colour is the photo mirrored at its edges: hair, a body or a face cut by the frame goes on as the picture
    beside the edge does, not as the edge's pixels repeated into streaks. Above the head and below the chin the
    mirror folds back and forth within the band from the edge to halfway to the face (above the head, within
    `_FOLD_ABOVE` at least), as hair and clothing go on, so that the face never shows again upside down (a head
    shot cut close under the chin showed its chin so where the body rose). The mask goes on only where the
    person meets the edge, and only as far as it runs unbroken in from it: hair cut by the top goes on above a
    head that moves down, instead of ending in a flat cut with the plate above it, while where the background
    meets the edge the plate shows. At the top and the sides the person meets the edge only where its colour
    there stands out from the plate's (`_stands_out`): the mask runs a little wide around the head, up to an
    edge the hair does not reach, and the mirror would bring the hair in from there."""
    layers = cv2.copyMakeBorder(np.dstack([foreground, alpha_8bit]), pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    height = foreground.shape[0]
    (_, top), (_, chin) = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    face = face_size(points)
    margin = _FACE_MARGIN * face
    beyond = np.arange(1, pad + 1)  # rows beyond the edge, counted from it
    above = _folded(beyond, max(math.floor(top - margin) // 2, round(_FOLD_ABOVE * face)))
    layers[pad - beyond] = layers[pad + above]
    below = _folded(beyond, max(0, height - 1 - math.ceil(chin + margin)) // 2)
    layers[pad + height - 1 + beyond] = layers[pad + height - 1 - below]
    depth = max(1, round(_EDGE_DEPTH * face))
    stretch = max(1, round(_EDGE_STRETCH * face))
    top_edge, left_edge, right_edge = (
        np.pad(_stands_out(colour[:depth], under[:depth], stretch), pad, mode="reflect")
        for colour, under in ((foreground, plate), (foreground.transpose(1, 0, 2), plate.transpose(1, 0, 2)),
                              (foreground[:, ::-1].transpose(1, 0, 2), plate[:, ::-1].transpose(1, 0, 2))))
    alpha = layers[..., 3]
    # Gaps in the mask narrower than `depth` along the edge are closed first: one would go on beyond the edge as
    # a line of plate through the hair.
    closing = np.ones((1, depth), np.uint8)
    # Each edge's band as rows from the edge's own (in the photo, left as it is) outwards.
    for rows, meets in ((alpha[pad::-1], top_edge), (alpha[pad + height - 1:], None), (alpha[:, pad::-1].T, left_edge),
                        (alpha[:, -pad - 1:].T, right_edge)):
        person = cv2.morphologyEx(np.ascontiguousarray(rows), cv2.MORPH_CLOSE, closing, borderType=cv2.BORDER_REFLECT)
        if meets is not None:
            person[0] = person[0] * meets
        rows[1:] = np.minimum.accumulate(person, axis=0)[1:]
    return layers


def _stands_out(colour: np.ndarray, plate: np.ndarray, stretch: int) -> np.ndarray:
    """How far (0..1) the person's colour stands out from the plate's along an edge: rows (depth × length × 3)
    from the edge inwards, averaged over them and over `stretch` pixels along the edge."""
    difference = np.abs(colour.astype(np.int16) - plate).mean(axis=(0, 2))
    stretch = min(stretch, len(difference))  # "same" would return the longer of the two
    difference = np.convolve(difference, np.full(stretch, 1.0 / stretch), mode="same")
    return np.clip((difference - _PLATE_LIKE) / (_STANDS_OUT - _PLATE_LIKE), 0.0, 1.0)


def _folded(beyond: np.ndarray, band: int) -> np.ndarray:
    """For rows (or columns) `beyond` an edge, counted from it, the row within `band` rows in from the edge that
    the picture mirrored back and forth within that band shows there (the edge's own row where the band is 0)."""
    if band == 0:
        return np.zeros_like(beyond)
    phase = beyond % (2 * band)
    return np.where(phase <= band, phase, 2 * band - phase)


def _check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3
            or 0 in image.shape):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise VivifyError(f"{name}: expected an RGB uint8 array of shape H×W×3, got {got}")
    return np.ascontiguousarray(image)


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks)
    if points.ndim != 2 or points.shape[0] != NUM_LANDMARKS or points.shape[1] not in (2, 3) \
            or not np.issubdtype(points.dtype, np.number):
        raise VivifyError(f"landmarks: expected the {NUM_LANDMARKS}×3 array that `track` returns, "
                          f"got {points.dtype} {points.shape}")
    return points
