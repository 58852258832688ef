"""Shared test material: a real face that scikit-image ships, and driving frames made by known motions."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

# MediaPipe and TFLite log to stderr at start-up; keep test output readable.
os.environ.setdefault("GLOG_minloglevel", "2")

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


@pytest.fixture(scope="session")
def face() -> np.ndarray:
    """The astronaut's head and shoulders, 256×256, the face about 45% of the frame's height."""
    image = skimage.data.astronaut()
    return np.ascontiguousarray(cv2.resize(image[0:300, 60:360], (256, 256), interpolation=cv2.INTER_AREA))


def similarity_frame(image: np.ndarray, center: tuple[float, float], angle: float = 0.0, scale: float = 1.0,
                     shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """`image` rotated (degrees, counter-clockwise) and scaled about `center`, then shifted."""
    matrix = cv2.getRotationMatrix2D(center, angle, scale)
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def open_mouth_frame(image: np.ndarray, lower_lip: tuple[float, float], mouth_width: float,
                     drop: float) -> np.ndarray:
    """The jaw dropped by `drop` px below the lips' meeting line, the gap filled with a dark cavity."""
    height, width = image.shape[:2]
    x_lip, y_lip = lower_lip
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # Everything below the lip line moves down by `drop`, fading out sideways past the mouth corners.
    sideways = np.exp(-(((xs - x_lip) / (1.2 * mouth_width)) ** 2))
    below = np.clip((ys - y_lip) / 2.0 + 0.5, 0.0, 1.0)
    map_y = ys - drop * sideways * below
    out = cv2.remap(image, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    cavity = np.zeros((height, width), np.uint8)
    cv2.ellipse(cavity, (int(x_lip), int(y_lip + drop / 2)), (int(mouth_width * 0.4), int(drop / 2)), 0, 0, 360,
                255, -1)
    out[cavity > 0] = (40, 12, 15)
    return out
