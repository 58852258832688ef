"""The live loop: newest frame in, animated frame out, as fast as the machine allows and never behind.

Each turn takes the source's newest frame (the ones that arrived meanwhile are dropped, never queued),
renders it with the same `Animator` as every other command, and hands it to a sink: a file (with all four
provenance marks), a preview window, or a virtual camera (both with the visible label and the invisible
watermark: a stream has no file to hold metadata or a manifest). Every session is recorded in the audit log.
Latency is measured from a frame's capture to the moment its output has been handed over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from vivify.errors import VivifyError
from vivify.io.reports import check_report_path, write_json
from vivify.io.writers import refuse_input_as_output
from vivify.live.capture import Captured, FrameSource, PacedFile
from vivify.provenance.marks import Marks

log = logging.getLogger(__name__)

# Commands, from stdin (one per line) or the window's keys.
RECALIBRATE, NEXT, PREVIOUS, PAUSE, QUIT = "c", "n", "p", " ", "q"
_COMMAND_WORDS = {"c": RECALIBRATE, "n": NEXT, "p": PREVIOUS, "": PAUSE, " ": PAUSE, "pause": PAUSE, "q": QUIT,
                  "quit": QUIT}
VIRTUAL_CAMERA_HELP = ("no virtual camera device: load v4l2loopback, e.g. `sudo apt-get install v4l2loopback-dkms && "
                       "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=vivify`")


class Sink(Protocol):
    def write(self, frame: np.ndarray, captured: Captured, readout: str) -> None: ...
    def idle(self) -> None: ...  # instead of write, for each frame skipped while paused
    def close(self) -> None: ...


class FileSink:
    """A video file at the source's frame rate, or at a variable-rate file's own `frame_times`: a frame dropped
    in real time shows the previous output again (the first frame stands in for any dropped before it), so the
    file keeps the real timing, and with it the `audio_source`'s sound in step. The writer applies all four
    provenance marks."""

    def __init__(self, output: str | Path, fps: float, size: tuple[int, int], overwrite: bool, marks: Marks,
                 audio_source: str | Path | None = None, frame_times: Sequence[Fraction] | None = None) -> None:
        from vivify.io.writers import open_writer

        self._writer = open_writer(output, fps, size, audio_source=audio_source, overwrite=overwrite, marks=marks,
                                   frame_times=frame_times)
        self._last: np.ndarray | None = None
        self._next_index = 0

    def write(self, frame: np.ndarray, captured: Captured, readout: str) -> None:
        for _ in range(captured.index - self._next_index):  # the frames dropped since the last one
            self._writer.write(frame if self._last is None else self._last)
        self._writer.write(frame)
        self._last, self._next_index = frame, captured.index + 1

    def idle(self) -> None:
        pass  # the next write repeats the last frame for the skipped ones

    def close(self, failed: bool = False) -> None:
        if failed:
            self._writer.abort()
        else:
            self._writer.close()


class _MarkedStreamSink:
    """Shows frames with the visible label and the invisible watermark, as a live picture must carry them.
    The session is recorded in the audit log before its first frame goes out, as a file is before it is
    published; a stream's length is not known then (frames: null)."""

    def __init__(self, size: tuple[int, int], fps: float, marks: Marks) -> None:
        self._marker = marks.frame_marker(size, fps)
        self._marks = marks
        self._shown = 0

    def _record(self, output: str) -> None:
        self._marks.log(output, None)

    def _mark(self, frame: np.ndarray) -> np.ndarray:
        marked = self._marker.apply(frame, self._shown)
        self._shown += 1
        return marked

    def idle(self) -> None:
        pass  # the picture stays as it was


class WindowSink(_MarkedStreamSink):
    """A preview window with an fps and latency readout; its keys are the commands."""

    def __init__(self, size: tuple[int, int], fps: float, marks: Marks, commands: queue.SimpleQueue) -> None:
        super().__init__(size, fps, marks)
        self._commands = commands
        _check_display()
        self._record("window")
        cv2.namedWindow("vivify live", cv2.WINDOW_AUTOSIZE)

    def write(self, frame: np.ndarray, captured: Captured, readout: str) -> None:
        shown = cv2.cvtColor(self._mark(frame), cv2.COLOR_RGB2BGR)
        cv2.putText(shown, readout, (8, shown.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
        cv2.imshow("vivify live", shown)
        self.idle()

    def idle(self) -> None:
        """Read the window's keys (and keep it responsive): while paused too, or the key that resumes could
        never arrive."""
        key = cv2.waitKey(1) & 0xFF
        if key != 0xFF and chr(key).lower() in _COMMAND_WORDS:
            self._commands.put(_COMMAND_WORDS[chr(key).lower()])
        elif key == 27:  # Esc
            self._commands.put(QUIT)

    def close(self, failed: bool = False) -> None:
        cv2.destroyAllWindows()


def _check_display() -> None:
    """Refuse a window where none can open. OpenCV's GUI (Qt) aborts the whole process when it cannot reach
    the display, instead of raising: without one it is refused at once, and a display that is named is first
    tried by a child process, whose abort says only that it cannot be reached."""
    if not sys.platform.startswith("linux"):
        return
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not display:
        raise VivifyError("cannot open a window here (no display): use -o OUT.mp4 or --virtual-camera")
    probe = "import cv2; cv2.namedWindow('vivify'); cv2.destroyAllWindows()"
    try:
        opened = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        opened = False
    if not opened:
        raise VivifyError(f"cannot open a window here (the display {display} cannot be reached): use -o OUT.mp4 or "
                          "--virtual-camera")


class VirtualCameraSink(_MarkedStreamSink):
    """A virtual camera (pyvirtualcam: v4l2loopback on Linux) that video-call apps can pick."""

    def __init__(self, size: tuple[int, int], fps: float, marks: Marks) -> None:
        super().__init__(size, fps, marks)
        import pyvirtualcam

        try:
            self._camera = pyvirtualcam.Camera(width=size[0], height=size[1], fps=fps)
        except RuntimeError as error:
            raise VivifyError(f"{VIRTUAL_CAMERA_HELP} ({error})".replace("\n", " ")) from None
        try:
            self._record(f"virtual camera {self._camera.device}")
        except BaseException:
            self._camera.close()
            raise

    def write(self, frame: np.ndarray, captured: Captured, readout: str) -> None:
        self._camera.send(self._mark(frame))

    def close(self, failed: bool = False) -> None:
        self._camera.close()


# How often a terminal's reader looks again whether the session is in the foreground, and for typing.
_TERMINAL_POLL_SECONDS = 0.2


def terminal_of(stream: Any) -> int | None:
    """The file descriptor of `stream` where it is a terminal, else None (a pipe, a file, a test's stand-in)."""
    try:
        fd = stream.fileno()
        return fd if os.isatty(fd) else None
    except (AttributeError, OSError, ValueError):
        return None


def in_foreground(terminal: int) -> bool:
    """Whether this process may read `terminal` now: a process outside its foreground process group (a job
    started with `&`, or moved there with Ctrl-Z and `bg`) that reads it is stopped by SIGTTIN."""
    try:
        return os.tcgetpgrp(terminal) == os.getpgrp()
    except OSError:  # not this process's controlling terminal: reading it cannot stop this process
        return True


def read_commands(commands: queue.SimpleQueue, stream: Any = None) -> threading.Thread:
    """Feed the commands typed on stdin (c, n, p, pause or an empty line, q), one per line, to `commands`:
    from a pipe as they come, from a terminal only while the session is in its foreground."""
    stream = stream or sys.stdin
    terminal = terminal_of(stream)

    def heard(line: str) -> None:
        word = line.strip().lower()
        if word in _COMMAND_WORDS:
            commands.put(_COMMAND_WORDS[word])

    def read_terminal(fd: int) -> None:
        # Read the descriptor itself, one typed line at a time (a terminal's canonical mode), and only once
        # select says a line is there: a buffered reader would block in read() while the job goes to the
        # background. The terminal's line may be typed as the foreground changes; the second check keeps
        # that window to the moment between it and the read.
        while True:
            if not in_foreground(fd):
                time.sleep(_TERMINAL_POLL_SECONDS)
                continue
            ready, _, _ = select.select([fd], [], [], _TERMINAL_POLL_SECONDS)
            if not ready or not in_foreground(fd):
                continue
            typed = os.read(fd, 4096)
            if not typed:  # Ctrl-D
                return
            for line in typed.decode(errors="replace").splitlines() or [""]:
                heard(line)

    def run() -> None:
        try:
            if terminal is not None:
                read_terminal(terminal)
                return
            for line in stream:
                heard(line)
        except (OSError, ValueError):  # no stdin to read (closed, or held by a test runner): no commands
            return

    thread = threading.Thread(target=run, name="vivify-live-commands", daemon=True)
    thread.start()
    return thread


# Latencies are counted in 0.1 ms bins up to 5 s (slower frames count in the last bin): the figures of a
# session that runs for days take the same memory as those of a minute.
_LATENCY_BIN_MS = 0.1
_LATENCY_BINS = 50_000


class LiveStats:
    """Frames in and out, and the latency of output frames (overall and by minute), for `--stats`.

    Frames in are those up to the last one output, as a recording holds them (a dropped frame shows the one
    before): the frames that arrive as the session stops (while its last frame renders, the one taken when
    `q` comes, those skipped while paused at the end) are neither shown nor dropped."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.frames_in = 0
        self.frames_out = 0
        self._histogram = np.zeros(_LATENCY_BINS, np.int64)
        self._minute = 0
        self._this_minute: list[float] = []  # latencies (ms) of the minute under way
        self._p95_by_minute: list[float] = []  # of the minutes before it that had frames

    def add(self, captured: Captured) -> float:
        now = time.monotonic()
        latency = 1000.0 * (now - captured.time)
        minute = int((now - self.started) // 60)
        if minute != self._minute:
            if self._this_minute:
                self._p95_by_minute.append(float(np.percentile(self._this_minute, 95)))
            self._minute, self._this_minute = minute, []
        self._this_minute.append(latency)
        self._histogram[min(int(latency / _LATENCY_BIN_MS), _LATENCY_BINS - 1)] += 1
        self.frames_in = captured.index + 1
        self.frames_out += 1
        return latency

    def _percentile(self, q: float) -> float:
        """The q-th percentile of all latencies (ms), to the bin's precision; 0 before any frame."""
        if not self.frames_out:
            return 0.0
        rank = np.searchsorted(np.cumsum(self._histogram), q / 100.0 * self.frames_out)
        return float((rank + 0.5) * _LATENCY_BIN_MS)

    def report(self) -> dict[str, Any]:
        elapsed = max(1e-9, time.monotonic() - self.started)
        by_minute = self._p95_by_minute + ([float(np.percentile(self._this_minute, 95))] if self._this_minute else [])
        return {"frames_in": self.frames_in, "frames_out": self.frames_out,
                "dropped": self.frames_in - self.frames_out,
                "fps": self.frames_out / elapsed, "seconds": elapsed,
                "latency_ms": {"p50": self._percentile(50), "p95": self._percentile(95), "p95_by_minute": by_minute}}


def run_live(source: FrameSource, sink: Sink, renderers: Sequence[Callable[[np.ndarray], np.ndarray]],
             recalibrate: Callable[[int, np.ndarray], None] | None = None,
             commands: queue.SimpleQueue | None = None, seconds: float | None = None) -> dict[str, Any]:
    """Drive `renderers` (one per portrait: frame in, animated frame out) from `source` into `sink` until the
    source ends, `seconds` pass, or a quit command; returns the stats."""
    commands = commands or queue.SimpleQueue()
    stats = LiveStats()
    current, paused, last = 0, False, -1
    quitting = False  # asked to quit before any frame was shown: after the first, so a recording is not empty
    readout = ""
    source.start()
    try:
        end = None if seconds is None else stats.started + seconds
        while end is None or time.monotonic() < end:
            captured = source.next_after(last, end)  # a stalled source does not hold the session past its end
            if captured is None:
                break
            last = captured.index
            while not commands.empty():
                command = commands.get()
                if command == QUIT:
                    if stats.frames_out:
                        return stats.report()
                    quitting = True
                if command == PAUSE:
                    paused = not paused
                elif command in (NEXT, PREVIOUS):
                    current = (current + (1 if command == NEXT else -1)) % len(renderers)
                elif command == RECALIBRATE and recalibrate is not None:
                    recalibrate(current, captured.frame)
            if quitting and paused:
                # As any quit before the first frame: this one is shown, so a recording is not empty.
                print("vivify: quit while paused before the first frame: ending on this one frame", file=sys.stderr)
                paused = False
            if paused:
                sink.idle()
                continue
            sink.write(renderers[current](captured.frame), captured, readout)
            latency = stats.add(captured)
            readout = f"{stats.frames_out / max(1e-9, time.monotonic() - stats.started):.1f} fps, {latency:.0f} ms"
            if quitting:
                break
    finally:
        source.close()
    return stats.report()


def _recorded_sound(source: PacedFile, seconds: float | None) -> str | None:
    """The file whose sound a recording from `source` carries: the file's own, once through. Looped, the
    sound does not repeat with the frames: it is kept only where the session cannot outlast one pass."""
    if not source.has_audio:
        return None
    if not source.loop or (seconds is not None and source.duration is not None and seconds <= source.duration):
        return source.location
    most = f" (--seconds {source.duration:g} or less keeps it)" if source.duration is not None else ""
    log.warning("the sound of %s is left out: --loop repeats its frames, not its sound%s", source.location, most)
    return None


@contextlib.contextmanager
def _ctrl_c_quits(commands: queue.SimpleQueue) -> Iterator[None]:
    """The first Ctrl-C ends the session as `q` does (a recording is finished and kept, the stats written); a
    second one interrupts at once, for a session that does not get to its next frame. Only the main thread
    can take signals: elsewhere Ctrl-C stays an interruption."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def quit_on_first(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("vivify: stopping after this frame (Ctrl-C again to abandon)", file=sys.stderr)
        commands.put(QUIT)

    previous = signal.signal(signal.SIGINT, quit_on_first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def live(portrait_paths: Sequence[str | Path], *, marks: Marks, camera: int | None = None, source: str | None = None,
         loop: bool = False, output: str | Path | None = None, window: bool = False, virtual_camera: bool = False,
         size: tuple[int, int] | None = None, stats_path: Path | None = None, seconds: float | None = None,
         overwrite: bool = False, commands: queue.SimpleQueue | None = None) -> dict[str, Any]:
    """Animate the portraits (the first shown; next/previous switch) live from a camera or a file or stream
    paced like one, into a file, a window or a virtual camera, each carrying `marks`. Returns (and with
    `stats_path` writes) the stats. Raises VivifyError for bad inputs, before anything is opened where it can."""
    from vivify.animator import Animator
    from vivify.io.image import fit_portrait, load_portrait
    from vivify.live.capture import Camera, Stream

    if loop and (camera is not None or source is None or "://" in source):
        raise VivifyError("--loop goes with --input FILE: a camera or a stream has no end to start again from")
    inputs = (*portrait_paths, *([source] if source is not None else []))
    if output is not None:
        refuse_input_as_output(output, *inputs)
    if stats_path is not None:
        check_report_path(stats_path, inputs, overwrite, output)
    first = fit_portrait(load_portrait(portrait_paths[0]), size)
    out_size = (first.shape[1], first.shape[0])
    portraits = [first] + [fit_portrait(load_portrait(path), out_size) for path in portrait_paths[1:]]
    if camera is not None:
        frames: FrameSource = Camera(camera)
    elif source is not None and "://" in source:
        frames = Stream(source)
    elif source is not None:
        frames = PacedFile(source, loop)
    else:
        raise VivifyError("give --camera N or --input FILE_OR_URL")
    # The filters' time constants follow the source's frame rate; a portrait without a face fails here.
    animators = [Animator(portrait, rate=frames.fps, name=str(path))
                 for portrait, path in zip(portraits, portrait_paths, strict=True)]
    commands = commands or queue.SimpleQueue()
    if output is not None:
        sound, times = (_recorded_sound(frames, seconds), frames.recorded_times()) \
            if isinstance(frames, PacedFile) else (None, None)
        sink: Any = FileSink(output, frames.fps, out_size, overwrite, marks, audio_source=sound, frame_times=times)
    elif window:
        sink = WindowSink(out_size, frames.fps, marks, commands)
    elif virtual_camera:
        sink = VirtualCameraSink(out_size, frames.fps, marks)
    else:
        raise VivifyError("give -o OUT.mp4, --window or --virtual-camera")

    def recalibrate(index: int, frame: np.ndarray) -> None:
        try:
            animators[index].set_reference(frame)
        except VivifyError as error:  # no face at that moment: keep the old reference
            print(f"vivify: {error}; the reference is unchanged", file=sys.stderr)

    failed = True
    try:
        with _ctrl_c_quits(commands):
            report = run_live(frames, sink, [animator.render for animator in animators], recalibrate, commands,
                              seconds)
        failed = False
    finally:
        sink.close(failed)
        for animator in animators:
            animator.close()
    if report["frames_out"] and not any(animator.frames_with_face for animator in animators):
        seen = f"frame of {source}" if source is not None else f"frame from camera {camera}"
        log.warning("no face found in any %s: the portrait stayed as it is", seen)
    if stats_path is not None:
        write_json(stats_path, report)
    return report
