"""Writing the animated result: MP4/MOV (H.264), WebM (VP9), GIF, or a folder of PNG frames.

Design:

* Atomic output. Everything is written to a hidden temporary file or folder beside OUT
  (`.OUT.tmp-XXXXXXXX`, same directory, so the final rename cannot cross file systems) and
  renamed onto OUT only when `close()` succeeds. A crash, Ctrl-C or `abort()` leaves OUT as it
  was. It also makes `-o` safely equal to an input file: inputs are read while the temp is written.
* Overlapped encoding. `write()` copies the frame into a small bounded queue and returns; a
  background thread converts, encodes and muxes (FFmpeg releases the GIL while encoding), so the
  caller's rendering of frame i+1 overlaps the encoding of frame i. Frame order is the queue order,
  and an error in the thread is re-raised by the next `write()` or by `close()`.
* Exact timing. Video frames get pts 0, 1, 2, ... in a time base of 1/fps, so N frames give exactly
  N frames and N/fps seconds. Audio (optional, from the driving video) is transcoded in step with
  the video, aligned so that the source's first video frame is t=0, and trimmed to N/fps.
* Provenance. With `marks` (vivify.provenance.marks.Marks), every frame is labelled and watermarked
  on the encoder thread, the finished file gets its metadata label and signed C2PA manifest (each PNG
  frame gets its own), and the audit log records the output before it is renamed into place.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import secrets
import threading
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import av
import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from vivify.errors import VivifyError
from vivify.io.files import forget_temp, make_temp_beside, refuse_special_target, remove_quietly, remove_temp

if TYPE_CHECKING:
    from vivify.provenance.marks import Marks

log = logging.getLogger(__name__)

SUPPORTED_OUTPUTS = (
    ".mp4, .mov or .m4v (H.264), .webm (VP9), .gif, "
    "or a folder of PNG frames (a path ending in '/' or without an extension)"
)

# Output extension -> (kind, FFmpeg muxer). The temp file's name hides the extension from FFmpeg,
# so the muxer is always named explicitly.
_CONTAINERS = {
    ".mp4": ("h264", "mp4"),
    ".m4v": ("h264", "mp4"),
    ".mov": ("h264", "mov"),
    ".webm": ("vp9", "webm"),
    ".gif": ("gif", "gif"),
}

# H.264: "veryfast" is near the knee of x264's speed/size curve (several times faster than the
# default "medium", for somewhat larger files at equal quality); CRF 20 is visually clean for faces.
_H264_OPTIONS = {"preset": "veryfast", "crf": "20"}
# VP9: libvpx is slow by default. Realtime deadline + cpu-used 8 + row multithreading makes it
# usable on a laptop CPU; CRF 32 with b=0 is constant-quality mode.
_VP9_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "32", "b": "0"}
_AUDIO = {"h264": ("aac", 128_000), "vp9": ("libopus", 96_000)}

# Frames waiting for the encoder thread: enough to smooth out jitter, small enough that memory
# stays ~4 frames (a 1080p RGB frame is 6 MB).
_QUEUE_DEPTH = 4
# H.264 frames larger than level 5.1/5.2 allows (36,864 macroblocks of 16×16: 4096×2304) play in desktop software
# players but not on many phones, in hardware decoders or in many browsers; a phone's 12-MP photo, animated at its
# own size, makes such a video. Beyond level 6.2 (139,264) no H.264 level describes the frames at all.
_H264_WIDELY_PLAYED_MACROBLOCKS = 36_864
_H264_LARGEST_LEVEL_MACROBLOCKS = 139_264

# How often the encoder thread looks at its queue again while it waits (see `_encode`).
_RECHECK_SECONDS = 0.1
_STOP = object()  # queue sentinel: no more frames

_FRAME_NAME = "frame_{:06d}.png"
_FRAME_NAME_RE = re.compile(r"frame_\d{6,}\.png")

# BT.709 (AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic = 1), limited range (1):
# frames are converted with this matrix *and* tagged with it, so players don't have to guess.
_BT709 = 1
_RANGE_MPEG = 1

# GIF palettes are rebuilt when the dithered frame, blurred, is off by more than this many levels
# on average (a frame quantised with its own palette scores ~1, a different photo ~3).
_GIF_PALETTE_TOLERANCE = 3.0

# GIF frame delays are in 1/100 s and browsers slow delays under 2/100 s to 10/100 s: a frame that would
# follow the last one written sooner is left out (a 60 frames/s GIF played at a third of its speed).
_GIF_MAX_FPS = 50
_GIF_MIN_DELAY = Fraction(1, _GIF_MAX_FPS)
# The time base of outputs whose frames keep their source's times: MPEG's 90 kHz clock, fine enough for any
# source's stamps to the tenth of a millisecond, and one that MP4, WebM and GIF muxers all take.
_FINE_TIME_BASE = Fraction(1, 90_000)


def open_writer(
    path: str | Path,
    fps: Fraction,
    size: tuple[int, int],
    audio_source: str | Path | None = None,
    overwrite: bool = False,
    marks: Marks | None = None,
    frame_times: Sequence[Fraction] | None = None,
) -> FrameWriter:
    """Open OUT for writing RGB frames of `size` = (width, height) at constant rate `fps`, or at
    `frame_times` where given: when each frame is shown (seconds from the first, increasing), to keep the
    timing of a variable-rate source (`VideoReader.frame_times`) and so its audio in step; the last frame
    lasts as long as the one before it, and frames past the last time follow that far apart.

    The output type follows `path`: .mp4/.m4v/.mov → H.264 + AAC, .webm → VP9 + Opus, .gif,
    or a folder of PNG frames for a path ending in '/', without an extension, or that is an
    existing directory. `audio_source` (any media file; its first audio stream is used, if it has
    one) is ignored for GIF and PNG output. `marks` are the provenance marks of this output (see the
    module docstring); every user-facing command passes them.

    Raises VivifyError for an unsupported extension, an existing OUT without `overwrite`, an
    unwritable or missing directory, or an unreadable `audio_source`; ValueError for a bad
    fps/size (H.264 and VP9 need even width and height: the caller rounds), and for `marks` that marked
    another output already.
    """
    display, out, kind, muxer = _target(path, overwrite)

    # Bounded denominator: FFmpeg time bases are 32-bit rationals (a float 29.97 would overflow).
    fps = Fraction(fps).limit_denominator(1_000_000)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if kind in ("h264", "vp9") and (width % 2 or height % 2):
        raise ValueError(f"{kind} output needs an even width and height, got {width}x{height}")
    if kind == "gif" and fps > _GIF_MAX_FPS:
        log.warning("%s: %.4g fps is faster than GIF players show (max %d): frames closer together are left out",
                    display, fps, _GIF_MAX_FPS)
    if kind == "h264":
        _warn_if_hard_to_play(display, width, height)
    if kind in ("gif", "png") and audio_source is not None and _has_audio(audio_source):
        log.warning("%s: %s holds no sound: the sound of %s is left out (an .mp4, .mov or .webm keeps it)",
                    display, "a GIF" if kind == "gif" else "a folder of frames", os.fspath(audio_source))

    if marks is not None:
        marks.claim()
    temp = make_temp_beside(display, out, folder=(kind == "png"))
    backend: _Backend | None = None
    try:
        if kind == "png":
            backend = _PngFolderBackend(temp, marks)
        else:
            backend = _AVBackend(display, temp, kind, muxer, fps, (width, height), audio_source, marks, frame_times)
        return FrameWriter(out, display, temp, kind, fps, (width, height), backend, overwrite, marks)
    except BaseException:  # also Ctrl-C or SIGTERM while the writer sets up (its marks take a moment)
        if backend is not None:
            backend.discard()
        remove_temp(temp)
        raise


def _warn_if_hard_to_play(display: str, width: int, height: int) -> None:
    macroblocks = -(-width // 16) * -(-height // 16)
    if macroblocks > _H264_LARGEST_LEVEL_MACROBLOCKS:
        log.warning("%s: %dx%d is larger than any H.264 level allows (about 8192x4320 pixels): few players will "
                    "show it; a smaller size plays everywhere", display, width, height)
    elif macroblocks > _H264_WIDELY_PLAYED_MACROBLOCKS:
        log.warning("%s: %dx%d is larger than many phones and browsers play (H.264 up to about 4096x2304 pixels); "
                    "a smaller size plays everywhere", display, width, height)


def check_output(path: str | Path, overwrite: bool = False) -> None:
    """Raise VivifyError now where `open_writer` would refuse OUT (its type, its folder, an existing file
    without `overwrite`): for commands with slow work before their writer opens (speech analysis)."""
    _target(path, overwrite)


def _target(path: str | Path, overwrite: bool) -> tuple[str, Path, str, str]:
    """(the path as given, its absolute form, the output kind, its FFmpeg muxer) for an OUT that may be written."""
    display = os.fspath(path)
    if not display:
        raise VivifyError("the output path is empty")
    # abspath (not resolve): normalises "." and ".." without following a symlinked OUT.
    out = Path(os.path.abspath(display))
    if not out.name:
        raise VivifyError(f"{display}: not a file or folder name")
    kind, muxer = _output_kind(display, out)
    _check_target(display, out, kind, overwrite)
    return display, out, kind, muxer


class FrameWriter:
    """An output being written; see `open_writer`. Use as a context manager:

        with open_writer("out.mp4", fps, (w, h), audio_source="drive.mp4") as writer:
            for frame in frames:
                writer.write(frame)

    Leaving the block normally finalises and renames onto OUT; leaving it by an exception
    removes the temporary output and leaves OUT untouched.

    Attributes: `path` (OUT), `kind` ("h264", "vp9", "gif" or "png"), `fps`, `size` (width,
    height), `has_audio`, `frames_written`.
    """

    def __init__(
        self,
        out: Path,
        display: str,
        temp: Path,
        kind: str,
        fps: Fraction,
        size: tuple[int, int],
        backend: _Backend,
        overwrite: bool,
        marks: Marks | None = None,
    ) -> None:
        self.path = out
        self.kind = kind
        self.fps = fps
        self.size = size
        self.has_audio = backend.has_audio
        self.frames_written = 0
        self._display = display
        self._temp = temp
        self._backend = backend
        self._overwrite = overwrite
        self._marks = marks
        self._marker = None if marks is None else marks.frame_marker(size, fps)
        self._state = "open"  # -> "closed" | "aborted"
        self._aborting = False
        self._error: BaseException | None = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._finished = threading.Event()  # set by the encoder thread as it ends
        threading.Thread(target=self._run, name=f"vivify-writer:{out.name}", daemon=True).start()

    # -- caller side ---------------------------------------------------------------------------

    def write(self, frame: np.ndarray) -> None:
        """Queue one RGB uint8 frame of shape (height, width, 3). The array may be reused after."""
        if self._state != "open":
            raise RuntimeError(f"{self._display}: writer is already {self._state}")
        self._raise_if_failed()
        width, height = self.size
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a {height}x{width}x3 uint8 frame, got {frame.shape} {frame.dtype}")
        # Copy: the caller may render the next frame into the same buffer while this one waits.
        self._queue.put(np.array(frame, dtype=np.uint8, order="C", copy=True))
        self.frames_written += 1

    def close(self) -> None:
        """Finish encoding and rename the temporary output onto OUT. Idempotent once closed."""
        if self._state == "closed":
            return
        if self._state == "aborted":
            raise RuntimeError(f"{self._display}: writer was aborted")
        if self.frames_written == 0:
            self.abort()
            raise VivifyError(f"{self._display}: no frames to write")
        try:
            self._stop_worker()
        except BaseException:  # Ctrl-C or SIGTERM while the encoder finishes: wait for it, then remove its output
            self.abort()
            raise
        if self._error is not None:
            self._discard()
            self._raise_if_failed()
        try:
            if self._marks is not None:
                self._marks.log(self.path, self.frames_written)
            _commit(self._display, self._temp, self.path, self._overwrite)
        except BaseException:
            self._discard()
            raise
        self._state = "closed"

    def abort(self) -> None:
        """Stop, and delete the temporary output; OUT is left as it was. Safe to call repeatedly."""
        if self._state != "open":
            return
        self._aborting = True  # the worker skips queued frames and does not finalise
        self._stop_worker()
        self._discard()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        w, h = self.size
        return f"FrameWriter({self._display!r}, {self.kind}, {w}x{h}, fps={self.fps}, {self._state})"

    def _stop_worker(self) -> None:
        # Never blocks forever: the worker keeps draining the queue even after an error. (Sent again after an
        # interrupt, the stop waits in the queue unread.) An event of its own, not Thread.join: after a join cut
        # short by Ctrl-C, the next join returns at once while the thread still runs (CPython 3.11, bpo-45274),
        # and its output would be removed under it, leaving the files it makes while sealing.
        self._queue.put(_STOP)
        self._finished.wait()

    def _discard(self) -> None:
        remove_temp(self._temp)
        self._state = "aborted"

    def _raise_if_failed(self) -> None:
        error = self._error
        if error is None:
            return
        if isinstance(error, VivifyError):
            raise error
        if isinstance(error, (av.error.FFmpegError, OSError)):
            reason = getattr(error, "strerror", None) or str(error)
            raise VivifyError(f"{self._display}: could not write ({reason})") from error
        raise error  # a bug, not the user's problem: keep its traceback

    # -- encoder thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._encode()
        finally:
            self._finished.set()

    def _encode(self) -> None:
        index = 0
        while True:
            try:
                # Not a plain get: an interrupt in the caller's put can cut the queue's wake-up short (its
                # condition keeps a stale waiter), and the stop would wait unseen. A get that times out looks again.
                item = self._queue.get(timeout=_RECHECK_SECONDS)
            except queue.Empty:
                continue
            if item is _STOP:
                break
            if self._error is not None or self._aborting:
                continue  # drain, so write() never blocks on a dead consumer
            try:
                if self._marker is not None:
                    item = self._marker.apply(item, index)  # type: ignore[arg-type]
                self._backend.write(item)  # type: ignore[arg-type]
            except BaseException as error:
                self._error = error
            index += 1
        if self._error is None and not self._aborting:
            try:
                self._backend.finish()
            except BaseException as error:
                self._error = error
        if self._error is not None or self._aborting:
            self._backend.discard()


# ---------------------------------------------------------------------------------------------
# Back ends: run on the writer thread only.


class _Backend(Protocol):
    has_audio: bool

    def write(self, frame: np.ndarray) -> None: ...

    def finish(self) -> None: ...

    def discard(self) -> None: ...


class _AVBackend:
    """H.264/VP9/GIF through PyAV, with optional transcoded audio."""

    def __init__(
        self,
        display: str,
        temp: Path,
        kind: str,
        muxer: str,
        fps: Fraction,
        size: tuple[int, int],
        audio_source: str | Path | None,
        marks: Marks | None,
        frame_times: Sequence[Fraction] | None = None,
    ) -> None:
        self._kind = kind
        self._muxer = muxer
        self._name = Path(display).name
        self._marks = marks
        self._fps = fps
        self._times = frame_times or ()  # not copied: a looped source's times are computed as they are read
        # Frames spaced evenly are numbered; frames at given times are stamped finely enough to keep them.
        self._time_base = _FINE_TIME_BASE if self._times else 1 / fps
        self._last_pts = -1
        self._index = 0
        self._temp = temp
        self._palette: Image.Image | None = None
        self._palette_argb = np.zeros((256, 4), np.uint8)
        self._audio: _AudioTrack | None = None
        # One reformatter for the whole stream: VideoFrame.reformat() would build (and tear down)
        # a new swscale context per frame, which costs 2-3x the conversion itself.
        self._reformatter = VideoReformatter()
        # One RGB frame for the whole stream too, filled in place: from_ndarray allocates and copies row by
        # row (0.4 ms a 512² frame, ten times the copy). Its rows may be padded, hence the strided view.
        self._rgb = av.VideoFrame(*size, "rgb24")
        row_bytes = self._rgb.planes[0].line_size
        self._rgb_pixels = np.frombuffer(self._rgb.planes[0], np.uint8).reshape(size[1], row_bytes)[:, : 3 * size[0]]

        options: dict[str, str] = {}
        if kind == "h264" and marks is None:
            # faststart: moov before mdat, so playback/streaming starts before the whole file loads. With
            # marks, the remux that adds the metadata label moves moov instead: one rewrite, not two.
            options["movflags"] = "+faststart"
        try:
            self._container = av.open(str(temp), mode="w", format=muxer, options=options)
        except (av.error.FFmpegError, OSError) as error:
            raise VivifyError(f"{display}: cannot write ({getattr(error, 'strerror', error)})") from None

        try:
            width, height = size
            if kind == "gif":
                stream = self._container.add_stream("gif", rate=fps)
                stream.pix_fmt = "pal8"
            else:
                codec = "libx264" if kind == "h264" else "libvpx-vp9"
                opts = _H264_OPTIONS if kind == "h264" else _VP9_OPTIONS
                stream = self._container.add_stream(codec, rate=fps, options=dict(opts))
                stream.pix_fmt = "yuv420p"
                ctx = stream.codec_context
                ctx.colorspace = ctx.color_primaries = ctx.color_trc = _BT709
                ctx.color_range = _RANGE_MPEG
            stream.width, stream.height = width, height
            stream.time_base = self._time_base
            # The encoder works in the frames' time base: in one of 1/fps, PyAV would round the given times
            # to whole frames.
            stream.codec_context.time_base = self._time_base
            self._video = stream

            if audio_source is not None and kind in _AUDIO:
                codec_name, bit_rate = _AUDIO[kind]
                self._audio = _AudioTrack.open(audio_source, self._container, codec_name, bit_rate)
            self.has_audio = self._audio is not None
            # Opens the encoders and writes the header now, so bad settings fail in open_writer.
            self._container.start_encoding()
            if self._audio is not None:
                self._audio.start()
        except BaseException:
            self.discard()
            raise

    def write(self, frame: np.ndarray) -> None:
        if self._kind == "gif":
            start = self._start(self._index)
            if self._last_pts >= 0 and start - self._last_pts * self._time_base < _GIF_MIN_DELAY:
                self._index += 1  # too soon after the last frame for a GIF player (see _GIF_MAX_FPS)
                return
            video_frame = self._to_pal8(frame)
        else:
            self._rgb_pixels[...] = frame.reshape(self._rgb_pixels.shape)
            video_frame = self._reformatter.reformat(
                self._rgb,
                format="yuv420p",
                dst_colorspace="itu709",
                dst_color_range="MPEG",
                threads=1,  # x264/libvpx already keep the cores busy; sws threads only contend
            )
        # Rounding two close times to one stamp would make two frames one: each is at least one tick on.
        self._last_pts = max(self._last_pts + 1, round(self._start(self._index) / self._time_base))
        video_frame.pts = self._last_pts
        video_frame.time_base = self._time_base
        self._index += 1
        for packet in self._video.encode(video_frame):
            self._container.mux(packet)
        if self._audio is not None:
            # Keep audio muxed up to the video written so far: interleaved file, bounded memory.
            self._audio.pump(self._start(self._index))

    def _start(self, index: int) -> Fraction:
        """When frame `index` starts (seconds): its given time, else `index` periods of 1/fps; past the last
        given time, periods as long as the last interval between given times."""
        times = self._times
        if index < len(times):
            return Fraction(times[index])
        if not times:
            return index / self._fps
        last = Fraction(times[-1] - times[-2]) if len(times) > 1 else 1 / self._fps
        return Fraction(times[-1]) + (index - len(times) + 1) * last

    def finish(self) -> None:
        for packet in self._video.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.finish(self._start(self._index))
        self._container.close()  # writes the trailer; with faststart, rewrites moov to the front
        if self._marks is not None:
            self._marks.seal_video(self._temp, self._kind, self._muxer, self._name)

    def discard(self) -> None:
        closers = [self._audio.close] if self._audio is not None else []
        if hasattr(self, "_container"):
            closers.append(self._container.close)
        for close in closers:
            try:
                close()
            except Exception:  # already failing; the temp file is deleted next
                log.debug("error while discarding output", exc_info=True)

    def _to_pal8(self, frame: np.ndarray) -> av.VideoFrame:
        """Quantise to a 256-colour palette, Floyd-Steinberg dithered, reusing the palette.

        Reusing one palette keeps colours and dither patterns stable between frames: no flicker,
        and FFmpeg's GIF encoder then stores only the pixels that changed (small files). A
        portrait animation mostly keeps its colours; when a frame no longer fits (blurred error
        above _GIF_PALETTE_TOLERANCE), a new palette is built from that frame and used from then
        on (FFmpeg writes it as a local colour table).
        """
        image = Image.fromarray(frame)
        if self._palette is not None:
            quantised = self._quantize(image)
            if _blurred_error(frame, np.asarray(quantised.convert("RGB"))) <= _GIF_PALETTE_TOLERANCE:
                return self._pal8_frame(quantised)
        # Pillow's fast octree beats its median cut here on both speed (~100x) and PSNR.
        self._palette = image.quantize(256, method=Image.Quantize.FASTOCTREE)
        rgb = np.zeros((256, 3), np.uint8)
        values = np.array(self._palette.getpalette() or [], np.uint8).reshape(-1, 3)[:256]
        rgb[: len(values)] = values
        self._palette_argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], axis=1)
        return self._pal8_frame(self._quantize(image))

    def _quantize(self, image: Image.Image) -> Image.Image:
        return image.quantize(palette=self._palette, dither=Image.Dither.FLOYDSTEINBERG)

    def _pal8_frame(self, quantised: Image.Image) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray((np.asarray(quantised), self._palette_argb), format="pal8")


def _blurred_error(original: np.ndarray, quantised: np.ndarray) -> float:
    """Mean colour error after an 8x box blur, i.e. as the eye sees dithering: 0..255."""
    height, width = original.shape[:2]
    size = (max(1, width // 8), max(1, height // 8))
    a = cv2.resize(original, size, interpolation=cv2.INTER_AREA)
    b = cv2.resize(quantised, size, interpolation=cv2.INTER_AREA)
    return float(cv2.absdiff(a, b).mean())


class _PngFolderBackend:
    """Numbered PNG frames. zlib level 1: several times faster than the default for files only a
    few percent larger on photographic frames. With marks, each frame carries its own metadata label and
    signed manifest."""

    has_audio = False

    def __init__(self, folder: Path, marks: Marks | None) -> None:
        self._folder = folder
        self._marks = marks
        self._index = 0

    def write(self, frame: np.ndarray) -> None:
        path = self._folder / _FRAME_NAME.format(self._index)
        if self._marks is None:
            Image.fromarray(frame).save(path, format="PNG", compress_level=1)
        else:
            self._marks.write_png(frame, path, path.name)
        self._index += 1

    def finish(self) -> None:
        pass

    def discard(self) -> None:
        pass


class _AudioTrack:
    """Transcodes the first audio stream of a source file into the output, in step with the video.

    Output time 0 is the source's first *video* frame when the source has video (the driving
    video: keeps speech in sync with the motion even when its audio starts earlier or later), else
    the start of its audio. Samples before 0 are dropped, a late start is padded with silence, and
    the track is cut at the video's end. Decoded audio passes through a FIFO holding at most
    about one video frame plus one codec frame of samples; nothing is loaded whole.
    """

    def __init__(
        self,
        source: av.container.InputContainer,
        in_stream: av.AudioStream,
        out_stream: av.AudioStream,
        container: av.container.OutputContainer,
        origin: float,
        rate: int,
        layout: str,
        sample_format: str,
    ) -> None:
        self._input = source
        self._in_stream = in_stream
        self._stream = out_stream
        self._container = container
        self._origin = origin
        self._rate = rate
        self._layout = layout
        self._format = sample_format
        self._channels = 1 if layout == "mono" else 2
        self._resampler = av.AudioResampler(format=sample_format, layout=layout, rate=rate)
        self._fifo = av.AudioFifo()
        self._frames = source.decode(in_stream)
        self._started = False
        self._eof = False
        self._drop = 0  # samples still to discard from the front (audio starting before t=0)
        self._queued_end = 0  # output-timeline sample index up to which audio has been queued
        self._encoded = 0  # samples handed to the encoder so far
        self._frame_size = 1024

    @classmethod
    def open(
        cls, source: str | Path, container: av.container.OutputContainer, codec_name: str, bit_rate: int
    ) -> _AudioTrack | None:
        """Add an audio stream for `source` to `container`; None if `source` has no audio."""
        name = os.fspath(source)
        if not Path(name).exists():
            raise VivifyError(f"{name}: file not found")
        try:
            input_container = av.open(name, mode="r", metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise VivifyError(f"{name}: cannot read audio ({reason})") from None
        try:
            if not input_container.streams.audio:
                input_container.close()
                return None
            in_stream = input_container.streams.audio[0]
            in_stream.thread_type = "AUTO"
            streams = input_container.streams
            reference = streams.video[0] if streams.video else in_stream
            origin = float(reference.start_time * reference.time_base) if reference.start_time else 0.0

            codec = av.codec.Codec(codec_name, "w")
            rate = in_stream.codec_context.sample_rate or 48_000
            if codec.audio_rates and rate not in codec.audio_rates:
                rate = 48_000  # Opus only takes 48/24/16/12/8 kHz; AAC tops out at 96 kHz
            # Mono stays mono; anything else becomes stereo (surround is downmixed).
            layout = "mono" if in_stream.codec_context.layout.nb_channels == 1 else "stereo"
            sample_format = "fltp" if codec_name == "aac" else "flt"  # the encoders' native formats
            out_stream = container.add_stream(codec_name, rate=rate)
            out_stream.codec_context.layout = layout
            out_stream.codec_context.format = sample_format
            out_stream.codec_context.bit_rate = bit_rate if layout == "stereo" else bit_rate // 2
            out_stream.time_base = Fraction(1, rate)
            return cls(input_container, in_stream, out_stream, container, origin, rate, layout, sample_format)
        except BaseException:
            input_container.close()
            raise

    def start(self) -> None:
        """Call after the encoders are open (the codec's frame size is known then)."""
        self._frame_size = self._stream.codec_context.frame_size or 1024

    def pump(self, until: Fraction) -> None:
        """Encode whole codec frames of audio up to output time `until` (seconds)."""
        target = round(until * self._rate)
        while self._queued_end < target and not self._eof:
            self._decode_one()
        self._encode(target, final=False)

    def finish(self, end: Fraction) -> None:
        """Encode the rest of the audio up to `end` (the video's duration), then flush."""
        self.pump(end)
        self._encode(round(end * self._rate), final=True)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self.close()

    def close(self) -> None:
        self._input.close()

    def _decode_one(self) -> None:
        try:
            frame = next(self._frames)
        except StopIteration:
            self._eof = True
            for out in self._resampler.resample(None):  # flush resampler's buffered samples
                self._queue(out)
            return
        except (av.error.FFmpegError, OSError) as error:
            # Damaged audio should not cost the user the whole video: end the track here.
            log.warning("%s: the audio ends early (%s)", self._input.name, getattr(error, "strerror", None) or error)
            self._eof = True
            return
        if not self._started:
            self._started = True
            start = (float(frame.time) if frame.time is not None else self._origin) - self._origin
            if start > 0:
                self._queue(self._silence(round(start * self._rate)))
            else:
                self._drop = round(-start * self._rate)
                self._queued_end -= self._drop
        for out in self._resampler.resample(frame):
            self._queue(out)

    def _queue(self, frame: av.AudioFrame) -> None:
        frame.pts = None  # FIFO timing is ours (sample counts); source timestamps may jump
        self._fifo.write(frame)
        self._queued_end += frame.samples

    def _silence(self, samples: int) -> av.AudioFrame:
        planar = self._format.endswith("p")
        shape = (self._channels, samples) if planar else (1, samples * self._channels)
        frame = av.AudioFrame.from_ndarray(np.zeros(shape, np.float32), format=self._format, layout=self._layout)
        frame.sample_rate = self._rate
        return frame

    def _encode(self, target: int, final: bool) -> None:
        if self._drop:
            skip = min(self._drop, self._fifo.samples)
            if skip:
                self._fifo.read(skip)
                self._drop -= skip
            if self._drop:
                return
        while True:
            remaining = target - self._encoded
            available = self._fifo.samples
            if final:
                size = min(self._frame_size, remaining, available)
            elif remaining >= self._frame_size and available >= self._frame_size:
                size = self._frame_size  # codecs want whole frames until the very last one
            else:
                return
            if size <= 0:
                return
            frame = self._fifo.read(size)
            frame.pts = self._encoded
            frame.time_base = Fraction(1, self._rate)
            self._encoded += frame.samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)


# ---------------------------------------------------------------------------------------------
# Paths: output kind, overwrite rules, temp creation, commit.


def _has_audio(source: str | Path) -> bool:
    """Whether a media file has an audio stream (False where it cannot be read: nothing is said of it here)."""
    try:
        with av.open(os.fspath(source), metadata_errors="ignore") as container:
            return bool(container.streams.audio)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return False


def _output_kind(display: str, out: Path) -> tuple[str, str]:
    """(kind, FFmpeg muxer) for OUT; PNG folders have muxer ""."""
    if display.endswith(("/", os.sep)) or out.is_dir() or not out.suffix:
        return "png", ""
    try:
        return _CONTAINERS[out.suffix.lower()]
    except KeyError:
        raise VivifyError(
            f"{display}: unsupported output type '{out.suffix}' (supported: {SUPPORTED_OUTPUTS})"
        ) from None


def _check_target(display: str, out: Path, kind: str, overwrite: bool) -> None:
    refuse_special_target(display, out)
    parent = out.parent
    if not parent.exists():
        raise VivifyError(f"{display}: folder '{parent}' does not exist")
    if not parent.is_dir():
        raise VivifyError(f"{display}: '{parent}' is not a folder")
    if not os.path.lexists(out):
        return
    if not overwrite:
        raise VivifyError(f"{display}: already exists (use --overwrite)")
    if out.is_dir() and not _is_frame_folder(out):
        # --overwrite must never delete an arbitrary directory (think `-o ~/ --overwrite`).
        raise VivifyError(f"{display}: is a folder with files other than {_FRAME_NAME.format(0)}...; not replacing it")
    if kind == "png" and not out.is_dir():  # a file named without an extension: not a previous output
        raise VivifyError(f"{display}: is a file, and a folder of frames would replace it; not replacing it")


def _is_frame_folder(folder: Path) -> bool:
    """True for an empty folder or one holding only frame_NNNNNN.png files (a previous output)."""
    try:
        with os.scandir(folder) as entries:
            return all(e.is_file(follow_symlinks=False) and _FRAME_NAME_RE.fullmatch(e.name) for e in entries)
    except OSError:
        return False


def _commit(display: str, temp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished temp onto OUT (atomic for files on POSIX)."""
    try:
        if not os.path.lexists(out):
            os.replace(temp, out)
            forget_temp(temp)
            return
        if not overwrite:  # OUT appeared while we were writing
            raise VivifyError(f"{display}: already exists (use --overwrite)")
        if temp.is_file() and not out.is_dir():
            os.replace(temp, out)
            forget_temp(temp)
            return
        # A folder cannot atomically replace a file or a non-empty folder: move the old one aside,
        # move the new one in (putting the old one back on failure), then delete the old one.
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        os.rename(out, old)
        try:
            os.rename(temp, out)
        except BaseException:
            os.rename(old, out)
            raise
        forget_temp(temp)
        remove_quietly(old)
    except OSError as error:
        raise VivifyError(f"{display}: cannot move the finished output into place ({error.strerror})") from None


def refuse_input_as_output(output: str | Path, *inputs: str | Path) -> None:
    """--overwrite must not replace the portrait or the driving video with the result: neither the file itself
    (however the path is written, a trailing slash included) nor a folder that holds it (a folder of frames)."""
    target = os.fspath(output).rstrip(os.sep) or os.sep  # "photo.png/" names photo.png to a folder writer
    folder = os.path.realpath(target) + os.sep
    for source in inputs:
        try:
            same = os.path.samefile(target, source)
        except OSError:  # either does not exist (yet): not the same file
            same = False
        if same:
            raise VivifyError(f"{output}: is an input file; choose another output")
        if os.path.isdir(target) and os.path.realpath(source).startswith(folder):
            raise VivifyError(f"{output}: holds an input file ({source}); choose another output")
