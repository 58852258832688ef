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
  came out fine.
* a file cut short (a download stopped part-way) whose index lists more frames than its data
  holds: `frames()` raises at the end, once it has given the frames there are. FFmpeg itself
  decodes what is there and stops. Formats without such an index (Matroska, WebM) just end early,
  so `frame_count` is an estimate, not a promise.

`frames(start)` begins part-way (a chunk of a long job): it seeks to the keyframe before frame
`start` and decodes only from there, where the packets' timestamps say which time frame `start` has.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from vivify.errors import VideoCutShort, VivifyError

log = logging.getLogger(__name__)

# FFmpeg demuxers for still images ("image2" by file extension, "png_pipe", "jpeg_pipe",
# "webp_pipe"... by content). They decode as a one-frame "video", never what the user meant as a
# driving video, so they are refused up front. GIFs use the "gif" demuxer and are accepted.
_STILL_IMAGE_DEMUXERS = ("image2",)
_ANIMATED_PIPE_DEMUXERS = ("gif_pipe",)

# Used only when a file declares no usable rate at all (rare: raw streams without timing).
_FALLBACK_FPS = Fraction(25)
# Faster than cameras record in real time (phones' slow motion included): a rate above it comes from timestamps
# that tell none (every packet stamped 0; a single frame, where FFmpeg falls back to the time base, 1/1000 s).
_MAX_PLAUSIBLE_FPS = 240

# AVColorRange value for full-range ("JPEG") YUV, common in phone footage.
_COLOR_RANGE_JPEG = 2


def is_still_image_format(demuxer: str) -> bool:
    """Whether FFmpeg's demuxer (`container.format.name`) reads the file as a still image."""
    return demuxer in _STILL_IMAGE_DEMUXERS or (demuxer.endswith("_pipe") and demuxer not in _ANIMATED_PIPE_DEMUXERS)


def open_video(path: str | Path) -> VideoReader:
    """Open a driving video for streaming; use as `with open_video(p) as video: ...`."""
    return VideoReader(path)


def _frame_times(path: str | Path) -> list[int] | None:
    """Presentation time of every frame of the video stream, in order (stream time base), read from the
    packets without decoding them; None where a packet has no timestamp (raw streams) or the file cannot be
    demuxed again. Packets the demuxer marks as discarded (an edit list's pre-roll) make no frame."""
    try:
        with _open_container(path) as container:
            times = []
            for packet in container.demux(container.streams.video[0]):
                if packet.size and not packet.is_discard:
                    if packet.pts is None:
                        return None
                    times.append(packet.pts)
    except (av.error.FFmpegError, OSError, IndexError):
        return None
    return sorted(times)


def _cut_short(path: str | Path) -> tuple[int, int] | None:
    """(frames held, frames listed) where the file's index (MP4, MOV) lists frames that its data does not hold,
    read from the packets without decoding them; else None.

    A file cut short ends part-way through a packet, of the video or of another stream: the demuxer reads it
    short and flags it corrupt, and the packets after it are missing. An edit list, or a track shorter than
    the file, also leaves listed frames out, but with every packet whole."""
    try:
        with _open_container(path) as container:
            video = container.streams.video[0]
            listed = video.frames
            if not listed:
                return None
            held, partial = 0, False
            for packet in container.demux():
                if packet.size:
                    partial |= packet.is_corrupt
                    held += packet.stream.index == video.index
    except (av.error.FFmpegError, OSError, IndexError):
        return None
    return (held, listed) if held < listed and partial else None


def _number_frames(times: list[int], first_time: int | None) -> bool:
    """Whether the packets' times number the frames as the decoder gives them: frame 0 at the first time (a
    decoder drops the frames before a file's first keyframe, as in a capture cut mid-stream) and one frame for
    each time (two frames stamped alike would be one index apart and one time together)."""
    return times[:1] == [first_time] and all(a < b for a, b in itertools.pairwise(times))


def count_frames(path: str | Path, limit: int | None = None) -> int:
    """Frames in the video stream of `path`, counted from its packets without decoding them (for files that do
    not declare their length, such as a browser's recording); counting stops at `limit`. Raises VivifyError
    naming the file where it cannot be read."""
    try:
        with _open_container(path) as container:
            packets = (packet for packet in container.demux(container.streams.video[0])
                       if packet.size and not packet.is_discard)
            return sum(1 for _ in itertools.islice(packets, limit))
    except (av.error.FFmpegError, OSError, IndexError) as error:
        raise VivifyError(f"{path}: not a video or unreadable ({_reason(error)})") from None


class VideoReader:
    """A video file opened for sequential decoding.

    Attributes:
        path: the path as given.
        width, height: size of the frames `frames()` yields (after applying rotation metadata).
        fps: average frame rate, always > 0: the stream's average rate, unless frame count /
            duration (the whole-file average, right for GIFs and VFR) disagrees by over 1%;
            else the container's guess; else 25.
        frame_count: frames declared by the container, else an estimate from duration × fps,
            else None. Use it for progress bars, not for correctness.
        duration: seconds, if the file declares it, else None.
        has_audio: whether the file has at least one audio stream.
        rotation: degrees counter-clockwise applied to each decoded frame to make it upright
            (from the display matrix phones write; mirroring in that matrix is ignored).
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

        self._container = self._open()
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _open(self) -> av.container.InputContainer:
        try:
            return _open_container(self.path)
        except PermissionError as error:
            raise VivifyError(f"{self._name}: cannot read ({error.strerror})") from None
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise VivifyError(f"{self._name}: not a video or unreadable ({_reason(error)})") from None

    def _setup(self) -> None:
        container = self._container
        assert container is not None
        demuxer = container.format.name
        if is_still_image_format(demuxer):
            # FFmpeg takes any file named like an image for one: only one that decodes is called a still image.
            try:
                next(container.decode(video=0), None)
            except (av.error.FFmpegError, ValueError) as error:
                raise VivifyError(f"{self._name}: not a video or unreadable ({_reason(error)})") from None
            raise VivifyError(f"{self._name}: is a still image, not a video")
        if not container.streams.video:
            raise VivifyError(f"{self._name}: no video stream")

        stream = self._stream = _threaded_video(container)
        self.has_audio = bool(container.streams.audio)
        duration = _duration(container, stream)
        self.duration = float(duration) if duration else None
        self.fps = _frame_rate(stream, duration)
        if stream.frames:
            self.frame_count = int(stream.frames)
        elif duration:
            self.frame_count = max(1, round(duration * self.fps))
        else:
            self.frame_count = None

        self._decoded = 0
        self._reformatter = VideoReformatter()
        self._packets = container.decode(stream)
        # Decode the first frame now: proves the file is decodable and reveals the rotation
        # (display-matrix side data is attached to decoded frames), hence the upright size.
        first = self._next_frame()
        if first is None:
            raise VivifyError(f"{self._name}: video has no frames")
        self.rotation = _quarter_turns(first.rotation) * 90
        self._first_time = first.pts  # where frame 0 lies: the packets' timestamps must agree (`frames(start)`)
        self._first: np.ndarray | None = self._to_rgb(first)
        self.height, self.width = self._first.shape[:2]

    def frame_times(self) -> list[Fraction] | None:
        """When each frame is shown (seconds from the first), where the frames are unevenly spaced: a variable
        frame rate, as phones and screen recorders write. Writers given these times keep them, and so the
        audio in step (`open_writer`). None where every frame lies within a quarter of a frame of i / fps
        (writers then space the frames evenly), or where the packets' times do not number the decoded frames.
        Reads the file's packets once more, without decoding them."""
        times, base = _frame_times(self.path), self._stream.time_base
        if not times or base is None or not _number_frames(times, self._first_time):
            return None
        seconds = [(stamp - times[0]) * base for stamp in times]
        period = 1 / self.fps
        if all(abs(second - index * period) <= period / 4 for index, second in enumerate(seconds)):
            return None
        return seconds

    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """Yield every frame from index `start` on, in order, as an upright RGB uint8 array of shape
        height×width×3.

        Frames before `start` are not converted to RGB, and where the packets' timestamps tell which time
        frame `start` has, decoding starts at the keyframe before it instead of at the first frame.
        Single pass: decoding streams from the file, so a second call raises RuntimeError.
        Raises VivifyError if nothing can be decoded or the data is corrupt part-way through.
        """
        if self._iterated:
            raise RuntimeError("VideoReader.frames() can only be iterated once")
        self._require_open()
        if start < 0:
            raise ValueError(f"start must be 0 or more, not {start}")
        self._iterated = True
        return self._generate(start)

    def _generate(self, start: int) -> Iterator[np.ndarray]:
        first, self._first = self._first, None
        if first is None:  # defensive: _setup guarantees a first frame
            raise VivifyError(f"{self._name}: video has no frames")
        if start == 0:
            yield first
            frame = self._next_frame()
        else:
            frame = self._skip_to(start)
        while frame is not None:
            yield self._to_rgb(frame)
            frame = self._next_frame()
        # Only where fewer frames came out than the index lists: a second pass over a whole file costs a read.
        cut = _cut_short(self.path) if self._decoded < self._stream.frames else None
        if cut is not None:
            raise VideoCutShort(f"{self._name}: truncated: its index lists {cut[1]} frames, its data holds {cut[0]}")

    def _skip_to(self, index: int) -> av.VideoFrame | None:
        """Frame `index` (the first frame decoded at open being 0), decoding continuing after it; None where
        the video has no such frame."""
        self._require_open()
        times = _frame_times(self.path)
        if times is not None and _number_frames(times, self._first_time):
            if index >= len(times):
                return None
            try:
                frame = self._seek(times, index)
            except VivifyError:  # decoded from the start instead, where the error is reported at its frame
                frame = None
            if frame is not None:
                return frame
            self._restart()
        # Frame 0 was decoded at open: the frames up to `index` are decoded and dropped.
        for _ in range(index - 1):
            if self._next_frame() is None:
                return None
        return self._next_frame()

    def _seek(self, times: list[int], index: int) -> av.VideoFrame | None:
        """Frame `index`, shown at `times[index]`, decoded from the keyframe before it; None where the seek does
        not reach it exactly (decoding is then left anywhere)."""
        assert self._container is not None
        try:
            self._container.seek(times[index], stream=self._stream, backward=True)
        except av.error.FFmpegError:  # a format that cannot seek
            return None
        self._packets = self._container.decode(self._stream)
        frame = self._next_frame()
        # Exact only when decoding starts at or before the frame: a keyframe shown after it (frames reordered
        # around it) would miss it.
        if frame is None or frame.pts is None or frame.pts > times[index]:
            return None
        self._decoded = bisect.bisect_left(times, frame.pts) + 1  # for error messages: frames counted so far
        while frame is not None and frame.pts is not None and frame.pts < times[index]:
            frame = self._next_frame()
        return frame if frame is not None and frame.pts == times[index] else None

    def _restart(self) -> None:
        """Decode from the first frame again, in the file opened afresh (after a seek that missed); the first
        frame is decoded at once, as at open."""
        self.close()
        self._container = self._open()
        self._stream = _threaded_video(self._container)
        self._packets = self._container.decode(self._stream)
        self._decoded = 0
        self._next_frame()

    def _next_frame(self) -> av.VideoFrame | None:
        """Next decoded frame, None at the end; FFmpeg errors become a VivifyError."""
        self._require_open()
        try:
            frame = next(self._packets)
        except StopIteration:
            return None
        except (av.error.FFmpegError, OSError) as error:
            where = f"after frame {self._decoded}" if self._decoded else "in the first frame"
            raise VivifyError(f"{self._name}: corrupt video data {where} ({_reason(error)})") from None
        self._decoded += 1
        return frame

    def _require_open(self) -> None:
        if self._container is None:  # PyAV would crash on a closed file
            raise RuntimeError("VideoReader is closed")

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        # swscale assumes limited range unless told; full-range phone video would look washed out.
        full_range = frame.color_range == _COLOR_RANGE_JPEG
        # A shared reformatter keeps one swscale context; frame.to_ndarray(format=...) would set
        # up a new one for every frame (2-3x the cost of the conversion).
        rgb = self._reformatter.reformat(
            frame, format="rgb24", src_color_range="JPEG" if full_range else None
        ).to_ndarray()
        turns = _quarter_turns(frame.rotation)
        if turns:
            rgb = np.rot90(rgb, k=turns)  # frame.rotation and np.rot90 are both counter-clockwise
        # C-contiguous for OpenCV/mediapipe: copies only rotated views or rows padded by swscale.
        # (The unrotated array is a writable view of a fresh RGB frame, not of the decoder's pool.)
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


def _open_container(path: str | Path) -> av.container.InputContainer:
    # metadata_errors="ignore": a mis-encoded title tag must not make the video unreadable.
    return av.open(str(path), mode="r", metadata_errors="ignore")


def _threaded_video(container: av.container.InputContainer) -> av.VideoStream:
    """The first video stream, set to frame-threaded decoding: several frames decode in parallel on FFmpeg's
    own threads."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> Fraction | None:
    """Video duration in seconds (exact where the file gives it in its own time base)."""
    if stream.duration and stream.time_base:
        return Fraction(stream.duration) * stream.time_base
    if container.duration:
        return Fraction(container.duration, av.time_base)
    return None


def _frame_rate(stream: av.VideoStream, duration: Fraction | None) -> Fraction:
    """Average frame rate, never zero (GIFs and variable-frame-rate files included).

    FFmpeg's average_rate comes from probing the first frames; for constant-rate files it is the
    exact nominal rate (30000/1001, not 29.97002...). For GIFs (delays in 1/100 s) and VFR files
    it can be off, so when the container also gives a frame count and duration, their ratio (the
    true whole-file average) wins if the two disagree by more than 1%. A rate over _MAX_PLAUSIBLE_FPS is not
    believed: the rate the stream or its codec declares stands in for it.
    """
    rate = stream.average_rate or None
    if stream.frames and duration:
        whole_file = Fraction(stream.frames) / duration
        if not rate or abs(rate - whole_file) > whole_file / 100:
            rate = whole_file
    for candidate in (rate, stream.guessed_rate, stream.base_rate, stream.codec_context.framerate):
        if candidate and 0 < candidate <= _MAX_PLAUSIBLE_FPS:
            if rate and rate > _MAX_PLAUSIBLE_FPS:
                _warn_once(f"{stream.container.name}: its timestamps give {float(rate):.0f} frames/s, more than a "
                           f"camera records; using the {candidate} frames/s it declares")
            # Averages come out as e.g. 2997003/100000; keep denominators small for writers' time bases.
            return Fraction(candidate).limit_denominator(1001)
    _warn_once(f"{stream.container.name} declares no usable frame rate; assuming {_FALLBACK_FPS} fps")
    return _FALLBACK_FPS


@functools.lru_cache(maxsize=64)
def _warn_once(message: str) -> None:
    """A warning about a file, said once: a command opens its driving video more than once (to find the
    reference frame, then to render)."""
    log.warning(message)


def _quarter_turns(rotation: float | int | None) -> int:
    """Display rotation (degrees counter-clockwise) as quarter turns in 0..3; odd angles round."""
    return round((rotation or 0) / 90) % 4


def _reason(error: BaseException) -> str:
    """Short, one-line reason from an FFmpeg/OS error (without the repeated file name)."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    text = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return text if len(text) <= 100 else text[:97] + "..."
