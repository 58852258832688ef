"""Face measures for the self-reenactment evaluation, computed with dlib.

dlib's HOG detector, 68-point shape predictor and ResNet face descriptor are used on purpose: the engine
tracks faces with MediaPipe, so measuring it with its own landmarks would grade it by its own ruler.

AKD (average keypoint distance) is the mean Euclidean distance in pixels between the 68 landmarks of a
generated frame and of the real frame; AED (average Euclidean distance) is the distance between the two
128-d identity descriptors. Both follow the First Order Motion Model protocol (Siarohin et al., 2019).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


class Box(NamedTuple):
    """A face box in pixels, right and bottom exclusive (as dlib.rectangle)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    def iou(self, other: Box) -> float:
        inter = Box(
            max(self.left, other.left),
            max(self.top, other.top),
            min(self.right, other.right),
            min(self.bottom, other.bottom),
        )
        if inter.width <= 0 or inter.height <= 0:
            return 0.0
        return inter.area / float(self.area + other.area - inter.area)


@dataclass(frozen=True)
class Face:
    """Landmarks and identity descriptor of one face in one image."""

    box: Box
    landmarks: np.ndarray  # (68, 2) float64, x y in pixels
    descriptor: np.ndarray  # (128,) float64
    detected: bool  # False when the box was borrowed from another frame


@dataclass(frozen=True)
class PairScore:
    """AKD and AED of a generated frame against its real frame."""

    akd: float
    aed: float
    fallback: bool  # the face was not detected in the generated frame; the real frame's box was used


def l1(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean absolute pixel error with intensities in [0, 1], over all pixels and channels."""
    if generated.shape != real.shape:
        raise ValueError(f"shape mismatch: {generated.shape} vs {real.shape}")
    return float(np.mean(np.abs(generated.astype(np.float32) - real.astype(np.float32))) / 255.0)


def eye_span(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners of dlib's 68 landmarks (36 and 45): the face's size unit."""
    return max(1e-6, float(np.linalg.norm(landmarks[36] - landmarks[45])))


def score_faces(generated: Face, real: Face) -> PairScore:
    akd = float(np.mean(np.linalg.norm(generated.landmarks - real.landmarks, axis=1)))
    aed = float(np.linalg.norm(generated.descriptor - real.descriptor))
    return PairScore(akd=akd, aed=aed, fallback=not generated.detected)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    # dlib's bindings need a C-contiguous uint8 HxWx3 array.
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


_CACHE_SIZE = 8


def _digest(image: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(image.data)
    return h.digest()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    if len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _points(shape: Any) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


STEADY_SHIFT = 0.04  # of the box's size: the step between the boxes of `steady_landmarks_at`


class DlibFaceMeasure:
    """Loads the dlib models once; measures faces in RGB uint8 images.

    upsample: how many times the HOG detector doubles the image before searching. dlib's detector finds
    faces of about 80 px and up; one doubling (the right setting for 256x256 frames) brings that to ~40 px.
    """

    def __init__(self, upsample: int = 1) -> None:
        import dlib  # loaded here: a second of model loading that only measuring needs
        import face_recognition_models

        self._dlib = dlib
        # Small caches keyed by image content: a repeated image (the static baseline's frame 0, an engine
        # that returns the portrait while it has lost the face) is measured once. Hashing costs ~0.1 ms.
        self._boxes: OrderedDict[tuple[bytes, int], list[Box]] = OrderedDict()
        self._faces: OrderedDict[tuple[bytes, Box, bool], Face] = OrderedDict()
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self._encoder = dlib.face_recognition_model_v1(
            face_recognition_models.face_recognition_model_location()
        )

    def detect(self, image: np.ndarray, upsample: int | None = None) -> list[Box]:
        """All face boxes in the image, largest first."""
        img = _as_rgb(image)
        up = self.upsample if upsample is None else upsample
        key = (_digest(img), up)
        if key not in self._boxes:
            rects = self._detector(img, up)
            boxes = [Box(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
            _remember(self._boxes, key, sorted(boxes, key=lambda b: b.area, reverse=True))
        return list(self._boxes[key])

    def face_at(self, image: np.ndarray, box: Box, detected: bool = True) -> Face:
        """Landmarks and descriptor of the face in the given box."""
        img = _as_rgb(image)
        key = (_digest(img), box, detected)
        if key not in self._faces:
            shape = self._predictor(img, self._dlib.rectangle(*box))
            landmarks = _points(shape)
            # The descriptor (a ResNet pass on an aligned 150x150 chip) is most of the cost; passing the
            # shape we already have avoids a second landmark fit.
            descriptor = np.asarray(self._encoder.compute_face_descriptor(img, shape), dtype=np.float64)
            face = Face(box=box, landmarks=landmarks, descriptor=descriptor, detected=detected)
            _remember(self._faces, key, face)
        return self._faces[key]

    def landmarks_at(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The 68 landmarks (x, y) of the face in the given box, without its descriptor."""
        return _points(self._predictor(_as_rgb(image), self._dlib.rectangle(*box)))

    def steady_landmarks_at(self, image: np.ndarray, box: Box, shift: float = STEADY_SHIFT) -> np.ndarray:
        """The 68 landmarks averaged over fits from the box and from it moved by `shift` of its size in each
        of 8 directions. One fit's points move with where the box happens to sit (a box a few pixels off
        moves the lips by a fraction of a pixel); the average keeps what the face itself shows."""
        img = _as_rgb(image)
        dx, dy = shift * box.width, shift * box.height
        fits = [_points(self._predictor(img, self._dlib.rectangle(
            round(box.left + i * dx), round(box.top + j * dy), round(box.right + i * dx), round(box.bottom + j * dy))))
            for i in (-1, 0, 1) for j in (-1, 0, 1)]
        return np.mean(fits, axis=0)

    def face(self, image: np.ndarray, near: Box | None = None) -> Face | None:
        """The face in the image, or None when none is detected and no fallback box is given.

        near: the real frame's box; see `pick`. Without it the largest detection is taken.
        """
        boxes = self.detect(image)
        if near is None:
            return self.face_at(image, boxes[0]) if boxes else None
        box, detected = self.pick(boxes, near)
        return self.face_at(image, box, detected)

    @staticmethod
    def pick(boxes: list[Box], near: Box) -> tuple[Box, bool]:
        """The detection that overlaps `near` most, or `near` itself (detected=False) when none does.

        Matching by overlap ignores a spurious detection elsewhere in the frame; borrowing the real frame's
        box when the generated face is not found still yields landmarks (and a large AKD if the face is bad)
        instead of silently dropping the frame.
        """
        best = max(boxes, key=near.iou, default=None)
        if best is not None and near.iou(best) > 0.0:
            return best, True
        return near, False

    def compare(self, generated: np.ndarray, real: np.ndarray) -> PairScore | None:
        """AKD and AED of a generated frame against the real one; None when the real frame has no face."""
        real_face = self.face(real)
        if real_face is None:
            return None
        return self.compare_to(generated, real_face)

    def compare_to(self, generated: np.ndarray, real_face: Face) -> PairScore:
        """As compare, with the real frame's face already measured (it is shared by several methods)."""
        gen_face = self.face(generated, near=real_face.box)
        assert gen_face is not None  # a fallback box was given
        return score_faces(gen_face, real_face)
