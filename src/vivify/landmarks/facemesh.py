"""MediaPipe Face Mesh: 478 landmarks (iris included) in pixel coordinates.

The face models ship inside the mediapipe 0.10.21 wheel, so nothing is downloaded.
"""

from __future__ import annotations

import math

import numpy as np

from vivify.landmarks.mediapipe_graphs import face_detection as mp_face_detection
from vivify.landmarks.mediapipe_graphs import face_mesh as mp_face_mesh
from vivify.landmarks.mediapipe_graphs import image_frame, landmark_pb2, packet_creator, serialized_proto_list
from vivify.landmarks.topology import landmarks_apart

NUM_LANDMARKS = 478

# One landmark of a serialised NormalizedLandmarkList: the list field's tag and length, then x, y and z, each
# after its own tag; 17 bytes when, as Face Mesh leaves them, visibility and presence are unset.
_SERIALISED_LANDMARK = np.dtype([("head", "u1", 3), ("x", "<f4"), ("tag_y", "u1"), ("y", "<f4"),
                                 ("tag_z", "u1"), ("z", "<f4")])
_HEAD, _TAG_Y, _TAG_Z = (0x0A, 0x0F, 0x0D), 0x15, 0x1D


def _to_pixels(data: bytes, width: int, height: int) -> np.ndarray:
    """(478, 3) float32 from a serialised NormalizedLandmarkList: x, y in pixels; z in the same pixel scale as x
    (MediaPipe's convention).

    Read straight from the bytes when they have the usual layout: reading 1434 fields one by one through the
    protobuf objects costs 0.4 ms a frame, the bytes a fiftieth of that."""
    rows = np.frombuffer(data, _SERIALISED_LANDMARK) if len(data) % _SERIALISED_LANDMARK.itemsize == 0 else None
    if rows is not None and (rows["head"] == _HEAD).all() and (rows["tag_y"] == _TAG_Y).all() and (
            rows["tag_z"] == _TAG_Z).all():
        pts = np.stack([rows["x"], rows["y"], rows["z"]], axis=1)
    else:
        face = landmark_pb2.NormalizedLandmarkList.FromString(data)
        pts = np.array([(lm.x, lm.y, lm.z) for lm in face.landmark], dtype=np.float32)
    pts *= np.array([width, height, width], dtype=np.float32)
    return pts


def face_size(points: np.ndarray) -> float:
    """Height of the landmark bounding box in pixels."""
    return float(points[:, 1].max() - points[:, 1].min())


class FaceTracker(mp_face_mesh.FaceMesh):
    """Landmarks of one face across consecutive video frames (MediaPipe's tracking mode, a few ms a frame).

    MediaPipe finds the face to track with its short-range detector on the whole frame scaled down to 128 px,
    which misses a face under about a fifth of the frame's longer side (a half-body shot in 1080p). Where the
    whole frame shows no face, the face is looked for as `detect_faces` looks for it, and then tracked in a
    square window around it that follows it from frame to frame (a second tracking graph, so neither loses
    its place when the tracking moves between them).
    """

    def __init__(self) -> None:
        super().__init__(**_TRACKING)
        # Of the frame submitted and not yet collected: the frame and the window it was cropped to, if any.
        self._pending: tuple[np.ndarray, tuple[int, int, int] | None] | None = None
        self._window: tuple[int, int, int] | None = None  # left, top, side
        self._window_mesh: mp_face_mesh.FaceMesh | None = None
        self._misses = 0  # frames in a row without a face, for spacing the searches
        self._tracking = False  # whether the last frame had a face: its landmarks place this frame's

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the face in this frame, or None when it is lost."""
        self.submit(rgb)
        return self.collect()

    def submit(self, rgb: np.ndarray) -> None:
        """Start finding the landmarks of this frame; `collect` returns them. MediaPipe works in its own thread,
        on one core: the caller may use the other meanwhile."""
        self._pending = rgb, self._send_frame(rgb)

    def collect(self) -> np.ndarray | None:
        """The landmarks of the frame last submitted, or None when the face is lost in it."""
        if self._pending is None:
            raise RuntimeError("FaceTracker.collect without a frame submitted")
        (rgb, window), self._pending = self._pending, None
        found = self._found_in(rgb, window)
        if found is None and window is None and self._misses % _SEARCH_EVERY == 0:
            found = self._search(rgb)
        if found is not None and not self._tracking:
            found = self._settle(rgb, found)
        self._tracking = found is not None
        self._misses = 0 if found is not None else self._misses + 1
        if self._misses >= _SEARCH_EVERY:  # gone from its window for a while: the whole frame is searched again
            self._window = None
        return found

    def _send_frame(self, rgb: np.ndarray) -> tuple[int, int, int] | None:
        """Hand the frame to the graph that tracks the face: the whole frame's, or the window's (returned)."""
        window = self._window
        if window is None:
            _send(self, rgb)
        else:
            left, top, side = window
            _send(self._window_mesh, rgb[top:top + side, left:left + side])
        return window

    def _found_in(self, rgb: np.ndarray, window: tuple[int, int, int] | None) -> np.ndarray | None:
        """The landmarks (frame pixels) that the graph found in the frame sent, cropped to `window` if any."""
        if window is not None:
            return self._collect_window(rgb, window)
        return _receive(self, rgb.shape[1], rgb.shape[0])

    def _settle(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The landmarks of a face just found, measured again on the same frame until a pass moves them by under
        _SETTLED inter-ocular distances (at most _SETTLE_PASSES passes). The model measures a face just found in
        the detector's box, and every later frame in the box of the frame before's landmarks; it reads the same
        face 1-4% larger or smaller in the two (up to 15% for a small face in a large frame). The first frame is
        the reference of the motion: without this the whole clip was rendered off by that much."""
        for _ in range(_SETTLE_PASSES):
            again = self._found_in(rgb, self._send_frame(rgb))
            if again is None:
                break
            change = landmarks_apart(points, again)
            points = again
            if change < _SETTLED:
                break
        return points

    def _collect_window(self, rgb: np.ndarray, window: tuple[int, int, int]) -> np.ndarray | None:
        """The landmarks found in the window (frame pixels), the window moved on to follow them; where the face
        is lost, the window stays where it was (it may come back there)."""
        left, top, side = window
        points = _receive(self._window_mesh, side, side)
        if points is None:
            return None
        points += np.array([left, top, 0], np.float32)
        self._window = _window_around(points, rgb.shape, side)
        return points

    def _search(self, rgb: np.ndarray) -> np.ndarray | None:
        """The largest face in the frame that `detect_faces`'s windows find, tracked from now on in a window
        around it; None where there is none."""
        boxes = _face_boxes(rgb)
        if not boxes:
            return None
        x0, y0, x1, y1 = max(boxes, key=lambda box: box[3] - box[1])
        centre = np.array([[(x0 + x1) / 2, (y0 + y1) / 2]])
        left, top, side = window = _window_around(centre, rgb.shape, round(_WINDOW_SHARE * max(x1 - x0, y1 - y0)))
        if self._window_mesh is None:
            self._window_mesh = mp_face_mesh.FaceMesh(**_TRACKING)
        _send(self._window_mesh, rgb[top:top + side, left:left + side])
        return self._collect_window(rgb, window)

    def close(self) -> None:
        if self._window_mesh is not None:
            self._window_mesh.close()
        super().close()


_TRACKING = dict(static_image_mode=False, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5,
                 min_tracking_confidence=0.5)
# A face found by search is tracked in a square window this many times its size, which follows it.
_WINDOW_SHARE = 4.0
# A face just found is measured again until a pass moves its landmarks by under this many inter-ocular distances
# (about the landmarks' own noise on a still face), at most this many more passes (`FaceTracker._settle`).
_SETTLED = 0.003
_SETTLE_PASSES = 5
# While the face is lost, the frame is searched for it every this many frames (a search takes a few windows
# of the full-range detector: 10-100 ms).
_SEARCH_EVERY = 10


def _send(mesh: mp_face_mesh.FaceMesh, rgb: np.ndarray) -> None:
    """Hand a frame to a tracking graph. Runs the graph directly rather than through `process`, which builds a
    namedtuple class on every call (2 ms, a fifth of the frame budget)."""
    mesh._graph_outputs.clear()
    mesh._simulated_timestamp += 33333
    packet = packet_creator.create_image_frame(np.ascontiguousarray(rgb), image_format=image_frame.ImageFormat.SRGB)
    mesh._graph.add_packet_to_input_stream(stream="image", packet=packet.at(mesh._simulated_timestamp))


def _receive(mesh: mp_face_mesh.FaceMesh, width: int, height: int) -> np.ndarray | None:
    """The landmarks (pixels of the image sent) from a tracking graph, or None."""
    mesh._graph.wait_until_idle()
    output = mesh._graph_outputs.get("multi_face_landmarks")
    if output is None or output.is_empty():
        return None
    faces = serialized_proto_list(output)
    return _to_pixels(faces[0], width, height) if faces else None


def _window_around(points: np.ndarray, shape: tuple[int, ...], side: int) -> tuple[int, int, int]:
    """A square window (left, top, side) centred on the points' box, inside the frame, of `side` (or more if
    the face has grown past a third of it; at most the frame's shorter side)."""
    height, width = shape[:2]
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    side = min(height, width, max(side, round(3 * float(np.max(hi - lo)))))
    centre = (lo + hi) / 2
    left = int(np.clip(round(centre[0] - side / 2), 0, width - side))
    top = int(np.clip(round(centre[1] - side / 2), 0, height - side))
    return left, top, side


def detect_faces(rgb: np.ndarray, max_faces: int = 16) -> list[np.ndarray]:
    """Landmarks of every face in a still image, largest face first.

    Face Mesh looks for faces with MediaPipe's short-range detector, on the whole image scaled down to 128 px: a
    face under about a fifth of the image's longer side escapes it (a half-body photo, a wide group photo). So
    MediaPipe's full-range detector also looks, on square windows across the image, and Face Mesh measures each
    face it finds there on a crop around it.
    """
    with mp_face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=0.5,
    ) as mesh:
        faces = _mesh_faces(mesh, rgb)
        for x0, y0, x1, y1 in _face_boxes(rgb):
            centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
            if any(_inside(centre, face) for face in faces):
                continue
            side = _CROP_SHARE * max(x1 - x0, y1 - y0)
            left, top = (max(0, int(c - side / 2)) for c in centre)
            crop = rgb[top:top + int(side), left:left + int(side)]
            faces += [face + np.array([left, top, 0], np.float32) for face in _mesh_faces(mesh, crop)
                      if _inside(centre - [left, top], face)]
    return sorted(faces, key=face_size, reverse=True)[:max_faces]


def as_tracked(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The landmarks of the face at `points` (from `detect_faces`) as `FaceTracker` measures it. A still image's
    landmarks come from the detector's box, a tracked frame's from the landmarks before, and the two read the
    same face 1-2% of the eyes' distance apart (an open mouth's opening, more). The driving frames, their
    reference too, are tracked (`FaceTracker._settle`): a portrait measured the other way moved by that
    difference in every frame. Measured on a window around the face, 3 times its size; where the tracker finds
    another face there (a group photo's neighbour) or none, `points` as given."""
    left, top, side = _window_around(points, rgb.shape, 1)
    with FaceTracker() as tracker:
        found = tracker.detect(np.ascontiguousarray(rgb[top:top + side, left:left + side]))
    if found is None:
        return points
    found += np.array([left, top, 0], np.float32)
    return found if landmarks_apart(points, found) < _SAME_FACE else points


# `as_tracked` takes the tracker's face for the one given where their landmarks lie this close on average
# (inter-ocular distances): the same face read two ways is a few hundredths apart, a neighbour a whole face.
_SAME_FACE = 0.2


# A face the full-range detector finds is measured on a square crop this many times its box's larger side.
_CROP_SHARE = 3.0
# The full-range detector finds faces down to about a twentieth of its window; windows are halved while that
# leaves faces of the engine's minimum size (48 px) unseen, down to this side.
_SMALLEST_WINDOW = 960
# Halved windows overlap by this share: the faces left to find at their size are under a tenth of them (the
# larger ones were found in the windows twice the size), so each lies whole in one window.
_HALVED_OVERLAP = 0.2


def _mesh_faces(mesh: mp_face_mesh.FaceMesh, rgb: np.ndarray) -> list[np.ndarray]:
    result = mesh.process(np.ascontiguousarray(rgb))
    return [_to_pixels(face.SerializeToString(), rgb.shape[1], rgb.shape[0])
            for face in (result.multi_face_landmarks or [])]


def _face_boxes(rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Boxes (x0, y0, x1, y1, pixels) of the faces MediaPipe's full-range detector finds in square windows: the
    image's shorter side wide, half overlapping along the longer side, then halved while the image is large."""
    height, width = rgb.shape[:2]
    boxes = []
    with mp_face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as detector:
        side, overlap = min(height, width), 0.5
        while True:
            for top in _window_starts(height, side, overlap):
                for left in _window_starts(width, side, overlap):
                    result = detector.process(np.ascontiguousarray(rgb[top:top + side, left:left + side]))
                    for detection in result.detections or []:
                        box = detection.location_data.relative_bounding_box
                        x0, y0 = left + box.xmin * side, top + box.ymin * side
                        boxes.append((x0, y0, x0 + box.width * side, y0 + box.height * side))
            if side < _SMALLEST_WINDOW:
                return boxes
            side, overlap = side // 2, _HALVED_OVERLAP


def _window_starts(length: int, side: int, overlap: float) -> list[int]:
    """Where windows of `side` start along `length`, overlapping by at least `overlap` of a window, the last
    one flush with the end."""
    count = max(1, math.ceil((length - side) / (side * (1.0 - overlap))) + 1)
    return [round(i * (length - side) / max(1, count - 1)) for i in range(count)]


def _inside(point: np.ndarray, face: np.ndarray) -> bool:
    """Whether `point` lies within the box of a face's landmarks."""
    return bool(np.all(point >= face[:, :2].min(axis=0)) and np.all(point <= face[:, :2].max(axis=0)))
