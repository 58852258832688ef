"""Landmarks kept from one pass over a driving video for the next, on disk."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable

import numpy as np

from vivify.landmarks.facemesh import NUM_LANDMARKS

_SHAPE = (NUM_LANDMARKS, 3)
_RECORD_BYTES = NUM_LANDMARKS * 3 * np.dtype(np.float32).itemsize


class LandmarkSpool:
    """Each frame's driving landmarks (478×3 float32, or None where the face is lost), in frame order, in a
    temporary file: a second pass over the clip reads what the first tracked instead of tracking it again, in
    memory that does not grow with the clip's length (5.7 KB a frame on disk).

    >>> with LandmarkSpool() as spool:
    ...     for frame in frames: spool.append(tracker.detect(frame))
    ...     track = spool.replay()
    ...     for frame in frames: points = track(frame)   # the same landmarks, in the same order
    """

    def __init__(self) -> None:
        # Closed by close(), the end of the `with` block the spool is made in.
        self._file = tempfile.TemporaryFile(prefix="vivify-landmarks-")  # noqa: SIM115
        self._lost = np.full(_SHAPE, np.nan, np.float32)
        self.frames = 0  # how many frames' landmarks are kept

    def __enter__(self) -> LandmarkSpool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def append(self, points: np.ndarray | None) -> None:
        """Keep the next frame's landmarks (None: no face in it)."""
        self._file.write((self._lost if points is None else np.asarray(points, np.float32).reshape(_SHAPE)).data)
        self.frames += 1

    def extend(self, other: LandmarkSpool) -> None:
        """Keep another spool's frames after these (the landmarks of the clip's next frames)."""
        other._file.flush()
        other._file.seek(0)
        shutil.copyfileobj(other._file, self._file)
        self.frames += other.frames

    def replay(self, then: Callable[[np.ndarray], np.ndarray | None] | None = None,
               ) -> Callable[[np.ndarray], np.ndarray | None]:
        """A tracker's `detect` for a second pass: called once per frame, in order, it returns the landmarks
        kept for that frame (the frame itself is not looked at); past the frames kept, what `then` finds in the
        frame, where given (the tracker that tracked the kept frames, going on from them)."""
        self._file.flush()
        self._file.seek(0)
        remaining = self.frames

        def detect(frame: np.ndarray) -> np.ndarray | None:
            nonlocal remaining
            if remaining == 0 and then is not None:
                return then(frame)
            remaining -= 1
            record = self._file.read(_RECORD_BYTES)
            if len(record) < _RECORD_BYTES:
                raise RuntimeError("the driving video has more frames than were tracked in the first pass")
            points = np.frombuffer(record, np.float32).reshape(_SHAPE).copy()
            return None if np.isnan(points[0, 0]) else points

        return detect

    def close(self) -> None:
        self._file.close()
