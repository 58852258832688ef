"""MediaPipe Face Mesh: 478 landmarks (iris included) in pixel coordinates.

The face models ship inside the mediapipe 0.10.21 wheel, so nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

from vivify.landmarks.mediapipe_graphs import face_mesh as mp_face_mesh
from vivify.landmarks.mediapipe_graphs import image_frame, packet_creator, packet_getter

NUM_LANDMARKS = 478


def _to_pixels(face, width: int, height: int) -> np.ndarray:
    """(478, 3) float32: x, y in pixels; z in the same pixel scale as x (MediaPipe's convention)."""
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

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the face in this frame, or None when it is lost.

        Runs the graph directly rather than through `process`, which builds a namedtuple class on every
        call (2 ms, a fifth of the frame budget).
        """
        self._graph_outputs.clear()
        self._simulated_timestamp += 33333
        packet = packet_creator.create_image_frame(
            np.ascontiguousarray(rgb), image_format=image_frame.ImageFormat.SRGB)
        self._graph.add_packet_to_input_stream(stream="image", packet=packet.at(self._simulated_timestamp))
        self._graph.wait_until_idle()
        output = self._graph_outputs.get("multi_face_landmarks")
        if output is None or output.is_empty():
            return None
        faces = packet_getter.get_proto_list(output)
        return _to_pixels(faces[0], rgb.shape[1], rgb.shape[0]) if faces else None


def detect_faces(rgb: np.ndarray, max_faces: int = 16) -> list[np.ndarray]:
    """Landmarks of every face in a still image, largest face first."""
    height, width = rgb.shape[:2]
    with mp_face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=0.5,
    ) as mesh:
        result = mesh.process(np.ascontiguousarray(rgb))
    faces = [_to_pixels(face, width, height) for face in (result.multi_face_landmarks or [])]
    return sorted(faces, key=face_size, reverse=True)
