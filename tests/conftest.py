"""Shared test material: a real face that scikit-image ships (see vivify.demo)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vivify.demo import face_crop

# MediaPipe and TFLite log to stderr at start-up; keep test output readable.
os.environ.setdefault("GLOG_minloglevel", "2")

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


@pytest.fixture(scope="session")
def face() -> np.ndarray:
    """The astronaut's head and shoulders, 256×256, the face about 45% of the frame's height."""
    return face_crop(256)
