"""Streaming reader for the driving video (PyAV / FFmpeg).

Frames are decoded one at a time with FFmpeg's threaded decoder and handed out as upright RGB
uint8 arrays, so memory use does not grow with the video's length.

Error policy (every error is a one-line `VivifyError` starting with the path as given):

* missing file, unreadable file, not a video (text, a still image), no video stream:
  raised by `open_video`.
* no decodable frame at all: raised by `open_video`, which decodes the first frame up front so the
  failure comes before any expensive work (and so `width`/`height` can account for rotation);
  `frames()` raises the same error if it ever finds nothing to yield.
* data FFmpeg rejects part-way through: `frames()` raises, naming the file and how many frames
  came out fine. A *truncated* file usually does not trigger this: FFmpeg decodes what is there
  and the iterator simply ends early, so `frame_count` is an estimate, not a promise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import av.error
import numpy as np

from vivify.errors import VivifyError

log = logging.getLogger(__name__)

# FFmpeg demuxers for single still images. They decode as a one-frame "video", which is never
# what the user meant as a driving video, so they are refused up front. ("gif" is a real
# animation demuxer and is accepted.)
_STILL_IMAGE_DEMUXERS = ("image2",)
_ANIMATED_PIPE_DEMUXERS = ("gif_pipe",)

# Used only when a file declares no usable rate at all (rare: raw streams without timing).
_FALLBACK_FPS = Fraction(25)

# AVColorRange value for full-range ("JPEG") YUV, common in phone footage.
_COLOR_RANGE_JPEG = 2


def open_video(path: str | Path) -> VideoReader:
    """Open a driving video for streaming; use as `with open_video(p) as video: ...`."""
    return VideoReader(path)


class VideoReader:
    """A video file opened for sequential decoding.

    Attributes:
        path: the path as given.
        width, height: size of the frames `frames()` yields (after applying rotation metadata).
        fps: average frame rate, always > 0 (from the stream's average rate, else derived from
            frame count and duration, else the container's guess).
        frame_count: frames declared by the container, else an estimate from duration × fps,
            else None. Use it for progress bars, not for correctness.
        duration: seconds, if the file declares it, else None.
        has_audio: whether the file has at least one audio stream.
        rotation: degrees counter-clockwise applied to each decoded frame to make it upright.
    """

    path: str | Path
    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    duration: float | None
    has_audio: bool
    rotation: int

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._name = str(path)
        self._container: av.container.InputContainer | None = None
        self._iterated = False

        file = Path(path)
        if not file.exists():
            raise VivifyError(f"{self._name}: file not found")
        if file.is_dir():
            raise VivifyError(f"{self._name}: is a directory, not a video")

        try:
            # metadata_errors="ignore": a mis-encoded title tag must not make the video unreadable.
            self._container = av.open(str(file), mode="r", metadata_errors="ignore")
        except PermissionError as error:
            raise VivifyError(f"{self._name}: cannot read ({error.strerror})") from None
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise VivifyError(f"{self._name}: not a video or unreadable ({_reason(error)})") from None

        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        container = self._container
        assert container is not None
        demuxer = container.format.name
        if demuxer in _STILL_IMAGE_DEMUXERS or (
            demuxer.endswith("_pipe") and demuxer not in _ANIMATED_PIPE_DEMUXERS
        ):
            raise VivifyError(f"{self._name}: is a still image, not a video")
        if not container.streams.video:
            raise VivifyError(f"{self._name}: no video stream")

        stream = container.streams.video[0]
        # Frame-threaded decoding: several frames decode in parallel on FFmpeg's own threads.
        stream.thread_type = "AUTO"
        self._stream = stream
        self.has_audio = bool(container.streams.audio)
        self.duration = _duration_seconds(container, stream)
        self.fps = _frame_rate(stream, self.duration)
        if stream.frames:
            self.frame_count = int(stream.frames)
        elif self.duration:
            self.frame_count = max(1, round(self.duration * self.fps))
        else:
            self.frame_count = None

        self._decoded = 0
        self._packets = container.decode(stream)
        # Decode the first frame now: proves the file is decodable and reveals the rotation
        # (display-matrix side data is attached to decoded frames), hence the upright size.
        first = self._next_frame()
        if first is None:
            raise VivifyError(f"{self._name}: video has no frames")
        self.rotation = _quarter_turns(first.rotation) * 90
        self._first: np.ndarray | None = self._to_rgb(first)
        self.height, self.width = self._first.shape[:2]

    def frames(self) -> Iterator[np.ndarray]:
        """Yield every frame, in order, as an upright RGB uint8 array of shape height×width×3.

        Single pass: decoding streams from the file, so a second call raises RuntimeError.
        Raises VivifyError if nothing can be decoded or the data is corrupt part-way through.
        """
        if self._iterated:
            raise RuntimeError("VideoReader.frames() can only be iterated once")
        if self._container is None:
            raise RuntimeError("VideoReader is closed")
        self._iterated = True
        return self._generate()

    def _generate(self) -> Iterator[np.ndarray]:
        first, self._first = self._first, None
        if first is None:  # defensive: _setup guarantees a first frame
            raise VivifyError(f"{self._name}: video has no frames")
        yield first
        while True:
            frame = self._next_frame()
            if frame is None:
                return
            yield self._to_rgb(frame)

    def _next_frame(self) -> av.VideoFrame | None:
        """Next decoded frame, None at the end; FFmpeg errors become a VivifyError."""
        try:
            frame = next(self._packets)
        except StopIteration:
            return None
        except (av.error.FFmpegError, OSError) as error:
            where = f"after frame {self._decoded}" if self._decoded else "in the first frame"
            raise VivifyError(f"{self._name}: corrupt video data {where} ({_reason(error)})") from None
        self._decoded += 1
        return frame

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        # swscale assumes limited range unless told; full-range phone video would look washed out.
        full_range = frame.color_range == _COLOR_RANGE_JPEG
        rgb = frame.to_ndarray(format="rgb24", src_color_range="JPEG" if full_range else None)
        turns = _quarter_turns(frame.rotation)
        if turns:
            rgb = np.rot90(rgb, k=turns)  # frame.rotation and np.rot90 are both counter-clockwise
        # Own, contiguous memory: consumers (OpenCV, mediapipe) want it, and it must not alias
        # FFmpeg's frame pool after the next decode.
        return np.ascontiguousarray(rgb)

    def close(self) -> None:
        """Release the file. Safe to call more than once."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VideoReader({self._name!r}, {self.width}x{self.height}, fps={self.fps}, "
            f"frame_count={self.frame_count}, has_audio={self.has_audio})"
        )


def _duration_seconds(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _frame_rate(stream: av.VideoStream, duration: float | None) -> Fraction:
    """Average frame rate, never zero (GIFs and variable-frame-rate files included)."""
    rate = stream.average_rate
    if not rate and stream.frames and duration:
        rate = Fraction(stream.frames) / Fraction(duration)
    if not rate:
        rate = stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        log.warning("%s declares no frame rate; assuming %s fps", stream.container.name, _FALLBACK_FPS)
        return _FALLBACK_FPS
    # Averages over VFR files come out as e.g. 2997003/100000; keep writers' time bases sane.
    return Fraction(rate).limit_denominator(1001)


def _quarter_turns(rotation: float | int | None) -> int:
    """Display rotation (degrees counter-clockwise) as quarter turns in 0..3; odd angles round."""
    return round((rotation or 0) / 90) % 4


def _reason(error: BaseException) -> str:
    """Short, one-line reason from an FFmpeg/OS error (without the repeated file name)."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    text = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return text if len(text) <= 100 else text[:97] + "..."
