"""MediaPipe Face Mesh: 478 landmarks (iris included) in pixel coordinates.

The face models ship inside the mediapipe 0.10.21 wheel, so nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

from vivify.landmarks.mediapipe_graphs import face_mesh as mp_face_mesh
from vivify.landmarks.mediapipe_graphs import image_frame, landmark_pb2, packet_creator, serialized_proto_list

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
    """Landmarks of one face across consecutive video frames (MediaPipe's tracking mode, a few ms a frame)."""

    def __init__(self) -> None:
        super().__init__(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=0.5, min_tracking_confidence=0.5,
        )
        self._pending_size: tuple[int, int] | None = None  # of the frame submitted and not yet collected

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the face in this frame, or None when it is lost."""
        self.submit(rgb)
        return self.collect()

    def submit(self, rgb: np.ndarray) -> None:
        """Start finding the landmarks of this frame; `collect` returns them. MediaPipe works in its own thread,
        on one core: the caller may use the other meanwhile.

        Runs the graph directly rather than through `process`, which builds a namedtuple class on every
        call (2 ms, a fifth of the frame budget).
        """
        self._graph_outputs.clear()
        self._simulated_timestamp += 33333
        self._pending_size = rgb.shape[1], rgb.shape[0]
        packet = packet_creator.create_image_frame(
            np.ascontiguousarray(rgb), image_format=image_frame.ImageFormat.SRGB)
        self._graph.add_packet_to_input_stream(stream="image", packet=packet.at(self._simulated_timestamp))

    def collect(self) -> np.ndarray | None:
        """The landmarks of the frame last submitted, or None when the face is lost in it."""
        if self._pending_size is None:
            raise RuntimeError("FaceTracker.collect without a frame submitted")
        size, self._pending_size = self._pending_size, None
        self._graph.wait_until_idle()
        output = self._graph_outputs.get("multi_face_landmarks")
        if output is None or output.is_empty():
            return None
        faces = serialized_proto_list(output)
        return _to_pixels(faces[0], *size) if faces else None


def detect_faces(rgb: np.ndarray, max_faces: int = 16) -> list[np.ndarray]:
    """Landmarks of every face in a still image, largest face first."""
    height, width = rgb.shape[:2]
    with mp_face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=0.5,
    ) as mesh:
        result = mesh.process(np.ascontiguousarray(rgb))
    faces = [_to_pixels(face.SerializeToString(), width, height) for face in (result.multi_face_landmarks or [])]
    return sorted(faces, key=face_size, reverse=True)
