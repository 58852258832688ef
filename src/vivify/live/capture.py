"""Frame sources that behave like a camera: frames arrive at their own pace, whether or not anyone reads them.

A source publishes only its newest frame. A reader that falls behind gets the newest one and the frames in
between are gone (dropped, never queued), so latency cannot build up.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import overload

import numpy as np

from vivify.errors import VivifyError


@dataclass(frozen=True)
class Captured:
    """A frame, its number from the source's start (0, 1, ...), and when it was captured (time.monotonic())."""

    frame: np.ndarray
    index: int
    time: float


class FrameSource:
    """Publishes the newest frame from a background thread; `next_after` hands it to the reader."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fps = 30.0
        self.frames_in = 0
        self._latest: Captured | None = None
        self._done = False
        self._error: str | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"vivify-live-{name}", daemon=True)

    def start(self) -> FrameSource:
        self._thread.start()
        return self

    def next_after(self, index: int, until: float | None = None) -> Captured | None:
        """The newest frame numbered above `index`; None when the source has ended, or when none came by
        `until` (time.monotonic()). Raises VivifyError when it failed."""
        with self._changed:
            # As long as the source stalls (a camera may pause), up to `until`.
            self._changed.wait_for(lambda: self._error is not None or self._done or (
                self._latest is not None and self._latest.index > index),
                timeout=None if until is None else max(0.0, until - time.monotonic()))
            if self._error is not None:
                raise VivifyError(self._error)
            if self._latest is not None and self._latest.index > index:
                return self._latest
            return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _publish(self, frame: np.ndarray) -> None:
        with self._changed:
            self._latest = Captured(frame, self.frames_in, time.monotonic())
            self.frames_in += 1
            self._changed.notify_all()

    def _finish(self, error: str | None = None) -> None:
        with self._changed:
            self._done = True
            self._error = error
            self._changed.notify_all()

    def _run(self) -> None:
        raise NotImplementedError


class PacedFile(FrameSource):
    """A video file delivered as a camera would: each frame at its own time (the file's own times where its
    frames are unevenly spaced, else at its frame rate), from the first frame's arrival on; `loop` starts the
    file again at its end, one pass (`pass_seconds`) after the last began, each pass at the file's own times."""

    def __init__(self, location: str, loop: bool = False) -> None:
        from vivify.io.video import open_video

        super().__init__(Path(location).name)
        self.location = location
        self.loop = loop
        self._video = open_video(location)  # a bad file fails here, with its own message
        self.fps = float(self._video.fps)
        self.has_audio = self._video.has_audio
        self.duration = self._video.duration  # seconds, None where the file does not say
        # When each frame of a pass is due (seconds from its first), for a variable frame rate; None where
        # the frames are evenly spaced. A recording given them keeps the file's timing, and its sound in step.
        self.frame_times = self._video.frame_times()
        # How long a variable-rate pass lasts: to its last frame, and that frame as long as the interval
        # before it, as a recording's last frame lasts (`open_writer`). Not the file's duration: a file may
        # give its last frame next to nothing (1 ms), which would run two passes together. None where the
        # frames are evenly spaced: a pass is then its frames at the frame rate.
        self.pass_seconds: Fraction | None = None
        if self.frame_times is not None:  # two frames at least: one alone is evenly spaced
            self.pass_seconds = 2 * self.frame_times[-1] - self.frame_times[-2]

    def _due(self, number: int) -> float:
        """When frame `number` of a pass is due, in seconds from the pass's first frame."""
        if self.frame_times is not None and number < len(self.frame_times):
            return float(self.frame_times[number])
        return number / self.fps

    def recorded_times(self) -> Sequence[Fraction] | None:
        """When each frame of a recording of this source is shown (seconds from the first): the file's own times
        where they are uneven, pass after pass where it loops; None where its frames are evenly spaced (a
        recording at the frame rate keeps them, looped or not)."""
        times, one_pass = self.frame_times, self.pass_seconds  # both None, or neither
        if times is None or one_pass is None or not self.loop:
            return times
        return _Passes(times, one_pass)

    def _run(self) -> None:
        from vivify.io.video import open_video

        video, start, shown = self._video, time.monotonic(), 0
        try:
            while not self._stop.is_set():
                in_pass = 0
                for frame in video.frames():
                    if self._stop.wait(max(0.0, start + self._due(in_pass) - time.monotonic())):
                        return
                    self._publish(frame)
                    shown += 1
                    in_pass += 1
                video.close()
                if not self.loop:
                    break
                start += in_pass / self.fps if self.pass_seconds is None else float(self.pass_seconds)
                video = open_video(self.location)
            self._finish()
        except VivifyError as error:
            self._finish(f"{self.name}: the input failed after {shown} frames ({error})")
        finally:
            video.close()


class Camera(FrameSource):
    """A camera through OpenCV (V4L2 on Linux), frames as fast as it delivers them."""

    def __init__(self, number: int) -> None:
        import cv2

        super().__init__(f"camera {number}")
        # OpenCV logs each backend it tries on stderr: the error below says it in one line instead.
        level = cv2.getLogLevel()
        cv2.setLogLevel(0)  # silent
        try:
            self._capture = cv2.VideoCapture(number)
        finally:
            cv2.setLogLevel(level)
        if not self._capture.isOpened():
            raise VivifyError(f"camera {number}: no such camera, or it cannot be opened (is it in use?)")
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 30.0)

    def _run(self) -> None:
        import cv2

        try:
            while not self._stop.is_set():
                ok, frame = self._capture.read()
                if not ok:
                    self._finish(f"{self.name}: stopped delivering frames after {self.frames_in}")
                    return
                self._publish(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            self._finish()
        finally:
            self._capture.release()


class Stream(FrameSource):
    """A network stream (rtsp://, http://, ...) through PyAV, each frame delivered at its own time: a live
    stream's frames as they arrive, a file served over the network (which arrives faster than it plays) paced
    as a camera would deliver it."""

    def __init__(self, url: str) -> None:
        import av

        super().__init__(url)
        try:
            self._container = av.open(url, timeout=5.0)
            self._stream = self._container.streams.video[0]
        except (av.error.FFmpegError, OSError, IndexError) as error:
            reason = "no video in it" if isinstance(error, IndexError) else getattr(error, "strerror", None) or error
            raise VivifyError(f"{url}: cannot open the stream ({reason})") from None
        self.fps = float(self._stream.average_rate or 30)

    def _run(self) -> None:
        import av

        start: float | None = None  # when, on this machine's clock, the stream's time 0 is due
        try:
            for frame in self._container.decode(self._stream):
                if frame.time is not None:
                    now = time.monotonic()
                    if start is None or start + frame.time < now:
                        # Late (a live stream, or the first frame): the schedule moves with it, so a stream
                        # whose clock runs slow against this one builds up no latency.
                        start = now - frame.time
                    elif self._stop.wait(start + frame.time - now):
                        break
                if self._stop.is_set():
                    break
                self._publish(frame.to_ndarray(format="rgb24"))
            self._finish()
        except (av.error.FFmpegError, OSError) as error:
            self._finish(f"{self.name}: the stream failed after {self.frames_in} frames ({error})")
        finally:
            self._container.close()


class _Passes(Sequence[Fraction]):
    """The times of a looped file's frames, pass after pass without end, worked out as they are read (a writer
    reads each once): pass k's frame i is shown k passes after the file's own time for frame i."""

    def __init__(self, times: Sequence[Fraction], one_pass: Fraction) -> None:
        self._times, self._pass = times, one_pass

    def __len__(self) -> int:
        return sys.maxsize

    @overload
    def __getitem__(self, index: int) -> Fraction: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Fraction]: ...

    def __getitem__(self, index: int | slice) -> Fraction | Sequence[Fraction]:
        if isinstance(index, slice):
            raise TypeError("a looped file's frame times are read one at a time")
        number, frame = divmod(index if index >= 0 else len(self) + index, len(self._times))
        return number * self._pass + self._times[frame]
