"""The demo's driving clip, performed by the engine from the astronaut photo: she talks and moves her head."""

from __future__ import annotations

import numpy as np

from vivify.demo import performed_frames
from vivify.landmarks import topology
from vivify.landmarks.facemesh import FaceTracker


def test_the_performed_clip_talks_and_moves_its_head():
    frames = list(performed_frames(seconds=1.2, fps=25.0, size=256))
    assert len(frames) == 30 and frames[0].shape == (256, 256, 3)
    tracker = FaceTracker()
    points = [tracker.detect(frame) for frame in frames]
    tracker.close()
    assert all(p is not None for p in points)
    openings = np.array([topology.mouth_gap(p) / topology.inter_ocular(p) for p in points])
    assert openings.max() > 0.15 and openings.min() < 0.06  # the mouth opens wide and closes again
    eye_line = np.array([np.degrees(np.arctan2(*(p[263, 1::-1] - p[33, 1::-1]))) for p in points])
    assert np.ptp(eye_line) > 5.0  # the head tilts
