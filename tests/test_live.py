"""vivify live: a video file as the camera, a file as the output; pacing, dropping, stats and bad input."""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import av
import numpy as np
import pytest
from conftest import encode_clip, mux_audio, tone
from PIL import Image

from vivify.cli import main
from vivify.demo import driving_frames, face_crop
from vivify.errors import VivifyError
from vivify.live.capture import Captured, FrameSource, PacedFile
from vivify.live.session import NEXT, PAUSE, QUIT, run_live
from vivify.provenance.verify import verify

FPS = 25


@pytest.fixture(scope="module")
def material(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("live")
    portrait = folder / "astronaut.png"
    Image.fromarray(face_crop(256)).save(portrait)
    clip = encode_clip(folder / "camera.mp4", list(driving_frames(seconds=2.0, fps=FPS, size=256)), fps=FPS)
    blank = folder / "blank.png"
    Image.fromarray(np.full((256, 256, 3), 200, np.uint8)).save(blank)
    return {"portrait": portrait, "clip": clip, "blank": blank}


class _Collect:
    def __init__(self) -> None:
        self.frames: list[tuple[int, np.ndarray]] = []

    def write(self, frame, captured, readout) -> None:
        self.frames.append((captured.index, frame))

    def idle(self) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


def test_a_file_is_paced_like_a_camera(material):
    source = PacedFile(str(material["clip"])).start()
    times, last = [], -1
    while (captured := source.next_after(last)) is not None:
        times.append(captured.time)
        last = captured.index
    source.close()
    assert last == 49  # every frame published, none lost by a reader that keeps up
    intervals = np.diff(times)
    assert abs(np.median(intervals) - 1 / FPS) < 0.25 / FPS
    assert times[-1] - times[0] >= 0.95 * 49 / FPS  # not faster than the clip plays


def test_a_slow_renderer_drops_frames_instead_of_queueing_them(material):
    def slow(frame: np.ndarray) -> np.ndarray:
        time.sleep(0.1)  # 2.5 frame intervals: the renderer keeps falling behind
        return frame

    sink = _Collect()
    report = run_live(PacedFile(str(material["clip"])), sink, [slow])
    assert report["frames_in"] == 50
    assert 12 <= report["frames_out"] <= 25 and report["dropped"] == 50 - report["frames_out"]
    shown = [index for index, _ in sink.frames]
    assert shown == sorted(shown) and np.diff(shown).min() >= 1  # always the newest frame, in order
    # Latency stays near one render (100 ms) plus at most one frame interval; it does not build up.
    assert report["latency_ms"]["p95"] < 100 + 1000 / FPS + 60


def test_commands_switch_portraits_and_quit(material):
    commands: queue.SimpleQueue = queue.SimpleQueue()
    commands.put(NEXT)
    sink = _Collect()
    first, second = np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)
    renderers = [lambda frame: first, lambda frame: (commands.put(QUIT), second)[1]]
    report = run_live(PacedFile(str(material["clip"])), sink, renderers, commands=commands)
    assert [frame.max() for _, frame in sink.frames] == [1]  # next portrait, then quit
    assert report["frames_out"] == 1


def test_a_paused_session_still_hears_the_key_that_resumes_it(material):
    """While paused nothing is rendered, but the sink is still called: a window reads its keys there, and the
    space bar that resumes must get through."""
    commands: queue.SimpleQueue = queue.SimpleQueue()
    commands.put(PAUSE)

    class _Window(_Collect):
        idles = 0

        def idle(self) -> None:
            self.idles += 1
            if self.idles == 3:
                commands.put(PAUSE)  # the space bar, read from the window

        def write(self, frame, captured, readout) -> None:
            super().write(frame, captured, readout)
            commands.put(QUIT)

    sink = _Window()
    run_live(PacedFile(str(material["clip"])), sink, [lambda frame: frame], commands=commands)
    assert sink.idles == 3
    assert len(sink.frames) == 1 and sink.frames[0][0] >= 3  # resumed after the 3 frames skipped


def test_cli_writes_a_marked_file_and_the_stats(material, tmp_path):
    out, stats = tmp_path / "live.mp4", tmp_path / "figures" / "stats.json"  # a folder made for the stats
    assert main(["live", str(material["portrait"]), "--input", str(material["clip"]), "-o", str(out),
                 "--stats", str(stats)]) == 0
    report = json.loads(stats.read_text())
    assert set(report) >= {"frames_in", "frames_out", "dropped", "fps", "latency_ms"}
    assert report["frames_in"] == 50 and report["frames_out"] + report["dropped"] == 50
    latency = report["latency_ms"]
    assert set(latency) >= {"p50", "p95"} and 0 < latency["p50"] <= latency["p95"]
    with av.open(str(out)) as container:  # real timing kept: a dropped frame shows the previous one again
        assert container.streams.video[0].frames == 50
    marks = verify(out)
    assert marks["visible_label"]["found"] and marks["watermark"]["found"]


class _FailingCamera(FrameSource):
    def __init__(self) -> None:
        super().__init__("camera 0")

    def _run(self) -> None:
        for _ in range(3):
            self._publish(np.zeros((8, 8, 3), np.uint8))
        self._finish("camera 0: stopped delivering frames after 3")


def test_a_camera_that_fails_mid_run():
    with pytest.raises(VivifyError, match="camera 0: stopped delivering frames after 3"):
        run_live(_FailingCamera(), _Collect(), [lambda frame: frame])


@pytest.mark.parametrize("args, message", [
    (["--input", "missing.mp4", "-o", "x.mp4"], "missing.mp4: file not found"),
    (["--input", "rtsp://127.0.0.1:9/none", "-o", "x.mp4"], "rtsp://127.0.0.1:9/none: cannot open the stream"),
    (["--camera", "7", "-o", "x.mp4"], "camera 7: no such camera, or it cannot be opened"),
    (["--camera", "0", "--loop", "-o", "x.mp4"],
     "--loop goes with --input FILE: a camera or a stream has no end to start again from"),
    (["--input", "rtsp://127.0.0.1:9/none", "--loop", "-o", "x.mp4"],
     "--loop goes with --input FILE: a camera or a stream has no end to start again from"),
])
def test_bad_sources(material, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["live", str(material["portrait"]), *args]) == 2
    err = capsys.readouterr().err
    assert f"vivify: error: {message}" in err and err.count("\n") == 1
    assert not (tmp_path / "x.mp4").exists()


def test_a_recording_from_a_file_keeps_the_files_sound_in_step(material, tmp_path):
    """The recording keeps the file's timing (a dropped frame shows the one before), so the file's sound goes
    along."""
    frames = list(driving_frames(seconds=2.0, fps=FPS, size=128))
    clip = encode_clip(tmp_path / "talk.mp4", frames, fps=FPS, sound=tone(32_000, 16_000))
    out = tmp_path / "live.mp4"
    assert main(["live", str(material["portrait"]), "--input", str(clip), "-o", str(out)]) == 0
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio
        assert video.frames == len(frames) and len(audio) == 1
        assert float(audio[0].duration * audio[0].time_base) == pytest.approx(len(frames) / FPS, abs=0.1)


def test_a_looped_recording_keeps_the_sound_for_one_pass_and_says_when_it_leaves_it_out(material, tmp_path, caplog):
    """Looped, the sound does not repeat with the frames: a session that cannot outlast one pass keeps it, a
    longer one is recorded without it, and says so."""
    import logging

    frames = list(driving_frames(seconds=0.4, fps=FPS, size=128))
    clip = encode_clip(tmp_path / "talk.mp4", frames, fps=FPS, sound=tone(6_400, 16_000))
    within, beyond = tmp_path / "within.mp4", tmp_path / "beyond.mp4"
    for out, seconds in ((within, "0.3"), (beyond, "0.6")):
        with caplog.at_level(logging.WARNING):
            assert main(["live", str(material["portrait"]), "--input", str(clip), "--loop", "--seconds", seconds,
                         "-o", str(out)]) == 0
    with av.open(str(within)) as container:
        assert len(container.streams.audio) == 1
    with av.open(str(beyond)) as container:
        assert not container.streams.audio
    assert caplog.messages == [f"the sound of {clip} is left out: --loop repeats its frames, not its sound "
                               "(--seconds 0.4 or less keeps it)"]


def test_a_driving_clip_without_a_face_is_warned_about(material, tmp_path, caplog):
    """The session runs (a camera may show nobody for a while) but says that the portrait never moved."""
    import logging

    clip = encode_clip(tmp_path / "nobody.mp4", [np.full((128, 128, 3), 90, np.uint8)] * 6)
    with caplog.at_level(logging.WARNING):
        assert main(["live", str(material["portrait"]), "--input", str(clip), "-o", str(tmp_path / "x.mp4")]) == 0
    assert caplog.messages == [f"no face found in any frame of {clip}: the portrait stayed as it is"]


def test_a_portrait_without_a_face(material, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert main(["live", str(material["blank"]), "--input", str(material["clip"]), "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"vivify: error: no face found in {material['blank']}\n"


def test_the_output_may_not_be_the_input(material, tmp_path, capsys):
    clip = tmp_path / "camera.mp4"
    clip.write_bytes(material["clip"].read_bytes())
    before = clip.read_bytes()
    assert main(["live", str(material["portrait"]), "--input", str(clip), "-o", str(clip), "--overwrite"]) == 2
    assert capsys.readouterr().err == f"vivify: error: {clip}: is an input file; choose another output\n"
    assert clip.read_bytes() == before


@pytest.mark.skipif(bool(list(Path("/dev").glob("video*"))), reason="a video device exists here")
def test_a_missing_virtual_camera_says_how_to_enable_it(material, capsys):
    assert main(["live", str(material["portrait"]), "--input", str(material["clip"]), "--virtual-camera"]) == 2
    assert "sudo modprobe v4l2loopback" in capsys.readouterr().err


def test_a_window_without_a_display(material, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["live", str(material["portrait"]), "--input", str(material["clip"]), "--window"]) == 2
    assert capsys.readouterr().err == (
        "vivify: error: cannot open a window here (no display): use -o OUT.mp4 or --virtual-camera\n")


def test_a_window_on_a_display_that_cannot_be_reached(material, capsys, monkeypatch):
    """OpenCV's Qt aborts the process (exit 134) on a display it cannot reach: the session says so instead."""
    monkeypatch.setenv("DISPLAY", ":4099")  # no X server listens there
    assert main(["live", str(material["portrait"]), "--input", str(material["clip"]), "--window"]) == 2
    assert capsys.readouterr().err == ("vivify: error: cannot open a window here (the display :4099 cannot be "
                                       "reached): use -o OUT.mp4 or --virtual-camera\n")


def test_latency_figures_by_minute_and_overall(monkeypatch):
    """p95 by minute, and p50 and p95 overall (kept as counts in 0.1 ms bins, which do not grow with time)."""
    from vivify.live.capture import Captured
    from vivify.live.session import LiveStats

    clock = [1000.0]
    monkeypatch.setattr("vivify.live.session.time.monotonic", lambda: clock[0])
    stats = LiveStats()
    frame = np.zeros((2, 2, 3), np.uint8)
    for second in range(150):  # two and a half minutes, one frame a second: 20 ms late, 60 ms in minute 1
        clock[0] = 1000.0 + second
        latency = 0.060 if 60 <= second < 120 else 0.020
        stats.add(Captured(frame, second, clock[0] - latency))
    report = stats.report()
    latency = report["latency_ms"]
    assert latency["p95_by_minute"] == pytest.approx([20.0, 60.0, 20.0])
    assert latency["p50"] == pytest.approx(20.0, abs=0.1) and latency["p95"] == pytest.approx(60.0, abs=0.1)
    assert report["frames_out"] == 150 and report["dropped"] == 0


def test_a_recording_that_fails_leaves_nothing_behind(tmp_path):
    """A session that stops on an error (a camera failing mid-run, a second Ctrl-C) discards its recording: no output
    and no temporary file beside it, and no second error on the way out."""
    from vivify.live.session import FileSink
    from vivify.provenance.marks import Marks

    sink = FileSink(tmp_path / "live.mp4", FPS, (64, 64), overwrite=False, marks=Marks.create())
    frame = np.zeros((64, 64, 3), np.uint8)
    sink.write(frame, Captured(frame, 0, time.monotonic()), "")
    sink.close(failed=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["input", "output", "existing"])
def test_the_stats_file_may_not_replace_an_input_the_output_or_a_file(material, tmp_path, capsys, which):
    clip = tmp_path / "camera.mp4"
    clip.write_bytes(material["clip"].read_bytes())
    out, taken = tmp_path / "live.mp4", tmp_path / "taken.json"
    taken.write_text("mine")
    stats = {"input": clip, "output": out, "existing": taken}[which]
    message = {"input": f"{clip}: is an input file; choose another output",
               "output": f"{out}: is the output video too; choose another file for the figures",
               "existing": f"{taken}: already exists (use --overwrite)"}[which]
    assert main(["live", str(material["portrait"]), "--input", str(clip), "-o", str(out), "--stats", str(stats)]) == 2
    assert capsys.readouterr().err == f"vivify: error: {message}\n"
    assert clip.read_bytes() == material["clip"].read_bytes() and taken.read_text() == "mine"
    assert not out.exists()


def test_commands_piped_to_stdin_are_heard(material, tmp_path):
    """A program that drives the session writes its commands to stdin, which is then no terminal: `q` ends a
    looping session (it ran until killed before). Given before the first frame, after it: the recording is
    not empty."""
    import subprocess
    import sys

    out = tmp_path / "live.mp4"
    process = subprocess.Popen([sys.executable, "-m", "vivify.cli", "live", str(material["portrait"]), "--input",
                                str(material["clip"]), "--loop", "-o", str(out)], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    process.stdin.write("q\n")
    process.stdin.close()
    assert process.wait(timeout=120) == 0, process.stderr.read()
    assert verify(out)["ai_generated"]


def _published_times(make_source, monkeypatch, frames: int | None = None) -> list[float]:
    """When a source (made by `make_source`) publishes each frame (its first `frames` where given: a looping
    source has no end), run on a clock that only waiting moves."""
    from vivify.live import capture

    clock = [100.0]
    monkeypatch.setattr(capture.time, "monotonic", lambda: clock[0])
    source = make_source()
    published: list[float] = []

    def wait(seconds: float) -> bool:
        clock[0] += max(0.0, seconds)
        return frames is not None and len(published) >= frames  # a stop asked for

    monkeypatch.setattr(source._stop, "wait", wait)
    monkeypatch.setattr(source, "_publish", lambda frame: published.append(clock[0]))
    source._run()
    return published


def test_a_stream_that_arrives_faster_than_it_plays_is_paced(material, monkeypatch):
    """A file served over HTTP arrives all at once: its frames are delivered at their own times, as a camera
    would deliver them (they were dropped in bursts), and a frame that comes late moves the schedule on. Run on
    a clock that only waiting moves."""
    from vivify.live import capture

    # PyAV opens a local path like a URL.
    published = _published_times(lambda: capture.Stream(str(material["clip"])), monkeypatch)
    assert len(published) == 2 * FPS
    np.testing.assert_allclose(np.array(published) - published[0], np.arange(2 * FPS) / FPS, atol=1e-6)


class _FrozenCamera(FrameSource):
    """Delivers one frame, then nothing, for ever (a frozen camera, a stalled stream)."""

    def __init__(self) -> None:
        super().__init__("camera 0")

    def _run(self) -> None:
        self._publish(np.zeros((8, 8, 3), np.uint8))
        self._stop.wait()


def test_seconds_end_a_session_whose_source_has_stalled():
    """`--seconds` is a promise about the session, not about the source: a frozen camera does not hold it."""
    import threading

    reports: list[dict] = []
    session = threading.Thread(target=lambda: reports.append(
        run_live(_FrozenCamera(), _Collect(), [lambda frame: frame], seconds=0.3)), daemon=True)
    session.start()
    session.join(timeout=60)
    assert not session.is_alive() and reports[0]["frames_out"] == 1


def _interrupting(monkeypatch, at: int, presses: int = 1) -> None:
    """Animator.render presses Ctrl-C (SIGINT to this process) `presses` times in its call number `at`."""
    import signal

    from vivify.animator import Animator

    render, calls = Animator.render, [0]

    def pressing(self, frame, *args, **kwargs):
        calls[0] += 1
        for _ in range(presses if calls[0] == at else 0):
            signal.raise_signal(signal.SIGINT)
        return render(self, frame, *args, **kwargs)

    monkeypatch.setattr(Animator, "render", pressing)


def test_ctrl_c_ends_a_session_and_keeps_its_recording(material, tmp_path, monkeypatch, capsys):
    import signal

    from vivify.live.session import live
    from vivify.provenance.marks import Marks

    _interrupting(monkeypatch, 5)
    out = tmp_path / "live.mp4"
    report = live([material["portrait"]], source=str(material["clip"]), loop=True, output=out, marks=Marks.create())
    assert 5 <= report["frames_out"] <= 6  # the frame under way is finished, then the session ends
    assert "stopping after this frame (Ctrl-C again to abandon)" in capsys.readouterr().err
    assert verify(out)["ai_generated"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is itself again afterwards


def test_a_second_ctrl_c_abandons_the_recording(material, tmp_path, monkeypatch):
    from vivify.live.session import live
    from vivify.provenance.marks import Marks

    _interrupting(monkeypatch, 3, presses=2)  # the frame under way does not end
    with pytest.raises(KeyboardInterrupt):
        live([material["portrait"]], source=str(material["clip"]), loop=True, output=tmp_path / "live.mp4",
             marks=Marks.create())
    assert list(tmp_path.iterdir()) == []


def test_quitting_a_session_paused_before_its_first_frame_ends_it(material, capsys):
    """`q` (or the first Ctrl-C, which sends it) given while paused before any frame was shown: the session
    ends at once, on one frame as any quit before the first frame does, instead of running on to its end."""
    commands: queue.SimpleQueue = queue.SimpleQueue()
    commands.put(PAUSE)  # an Enter typed while the models load
    commands.put(QUIT)
    sink = _Collect()
    report = run_live(PacedFile(str(material["clip"])), sink, [lambda frame: frame], commands=commands)
    assert report["frames_out"] == 1 and report["frames_in"] < 2 * FPS  # ended before the clip did
    assert "vivify: quit while paused before the first frame: ending on this one frame" in capsys.readouterr().err


class _FakeVirtualCamera:
    """pyvirtualcam.Camera, keeping the frames sent to it."""

    sent: ClassVar[list[np.ndarray]] = []
    device = "/dev/video9"

    def __init__(self, width: int, height: int, fps: float) -> None:
        _FakeVirtualCamera.sent = []

    def send(self, frame: np.ndarray) -> None:
        self.sent.append(frame.copy())

    def close(self) -> None:
        pass


def _audit_records(data_dir: Path, output: str) -> list[dict]:
    from vivify.provenance import audit

    return [record for record in audit.read_records(data_dir) if record["output"] == output]


def test_a_virtual_camera_carries_the_watermark_and_is_recorded(material, data_dir, monkeypatch):
    """A stream has no file for metadata or a manifest, but its frames carry the invisible watermark (here the
    only mark: the visible label is off) and the session is in the audit log, with who answers for the label
    and the driving file among its inputs."""
    import types

    from vivify.provenance.watermark import detect_watermark

    monkeypatch.setitem(sys.modules, "pyvirtualcam", types.SimpleNamespace(Camera=_FakeVirtualCamera))
    assert main(["live", str(material["portrait"]), "--input", str(material["clip"]), "--virtual-camera",
                 "--seconds", "0.5", "--no-visible-label", "ACME Corp"]) == 0
    [record] = _audit_records(data_dir, "virtual camera /dev/video9")
    assert record["label"] == {"text": record["label"]["text"], "position": "bottom-right", "enabled": False,
                               "responsible": "ACME Corp"}
    assert [Path(entry["path"]) for entry in record["inputs"]] == [material["portrait"], material["clip"]]
    found = detect_watermark(_FakeVirtualCamera.sent)
    assert found.found and found.payload == record["content_id"]


@pytest.mark.parametrize("option", ["--sign-cert", "--sign-key"])
def test_signing_options_are_refused_for_a_stream(material, tmp_path, capsys, option):
    assert main(["live", str(material["portrait"]), "--input", str(material["clip"]), "--virtual-camera",
                 option, str(tmp_path / "mine.pem")]) == 2
    assert capsys.readouterr().err == (f"vivify: error: {option} signs an output file's C2PA manifest: a virtual "
                                       "camera or a window has no file to hold one (use -o OUT.mp4)\n")


def test_a_recording_lists_its_driving_file_among_its_inputs(material, data_dir, tmp_path):
    from vivify.provenance.manifest import read_manifest

    out = tmp_path / "live.mp4"
    assert main(["live", str(material["portrait"]), "--input", str(material["clip"]), "--seconds", "0.3",
                 "-o", str(out)]) == 0
    [record] = _audit_records(data_dir, str(out))
    assert [Path(entry["path"]) for entry in record["inputs"]] == [material["portrait"], material["clip"]]
    assert read_manifest(out)["ingredients"] == [material["portrait"].name, material["clip"].name]


def test_the_terminal_is_read_only_in_its_foreground(tmp_path):
    """A terminal that is not this process's own cannot stop it; a pipe is no terminal at all (read as it
    comes). The foreground itself is checked by the next test, on a terminal of its own."""
    from vivify.live.session import in_foreground, terminal_of

    main_side, terminal_side = os.openpty()
    read_end, write_end = os.pipe()
    try:
        with open(terminal_side, closefd=False) as terminal, open(read_end, closefd=False) as pipe:
            assert terminal_of(terminal) == terminal_side and in_foreground(terminal_side)
            assert terminal_of(pipe) is None
    finally:
        for fd in (main_side, terminal_side, read_end, write_end):
            os.close(fd)


# Run in a terminal of its own: the command (argv[1:]) as a background job, in a process group of its own as a
# shell's `&` puts it. Exits with the job's status, or 99 where the job was stopped (SIGTTIN: it read the
# terminal), after killing it.
_BACKGROUND_JOB = """
import os, signal, sys
job = os.fork()
if job == 0:
    os.setpgid(0, 0)
    os.execv(sys.argv[1], sys.argv[1:])
os.setpgid(job, job)
_, status = os.waitpid(job, os.WUNTRACED)
if os.WIFSTOPPED(status):
    os.kill(job, signal.SIGKILL)
    os._exit(99)
os._exit(os.waitstatus_to_exitcode(status))
"""


def test_a_session_in_the_background_runs_to_its_end(material, tmp_path):
    """Started with `&` from an interactive shell, the session shares the shell's terminal but is not in its
    foreground: reading it for commands would stop the session (SIGTTIN) for good. It leaves the terminal alone
    and finishes."""
    import pty

    out = tmp_path / "live.mp4"
    command = [sys.executable, "-m", "vivify.cli", "live", str(material["portrait"]), "--input",
               str(material["clip"]), "--seconds", "0.5", "-o", str(out)]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the terminal's session leader, in its foreground
        os.execv(sys.executable, [sys.executable, "-c", _BACKGROUND_JOB, *command])
    said = b""
    try:
        while chunk := os.read(terminal, 4096):
            said += chunk
    except OSError:  # the terminal closed with the job's end
        pass
    finally:
        os.close(terminal)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert status == 0, said.decode(errors="replace")
    assert verify(out)["ai_generated"]


def _hanging_up(monkeypatch, at: int) -> None:
    """Animator.render has the terminal hang up (SIGHUP to this process) in its call number `at`."""
    import signal

    from vivify.animator import Animator

    render, calls = Animator.render, [0]

    def hanging_up(self, frame, *args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            signal.raise_signal(signal.SIGHUP)
        return render(self, frame, *args, **kwargs)

    monkeypatch.setattr(Animator, "render", hanging_up)


def test_a_hang_up_ends_a_recording_as_sigterm_does(material, tmp_path, monkeypatch, capsys):
    """The terminal closed or the ssh connection dropped: the recording stops and its temporary file goes."""
    import signal

    _hanging_up(monkeypatch, 3)
    heard: list[int] = []

    def hear(signum: int, frame: object) -> None:
        heard.append(signum)

    previous = signal.signal(signal.SIGHUP, hear)  # a hang-up not handled by vivify does not end the test run
    try:
        assert main(["live", str(material["portrait"]), "--input", str(material["clip"]), "--loop",
                     "--seconds", "5", "-o", str(tmp_path / "live.mp4")]) == 128 + signal.SIGHUP
        assert not heard and signal.getsignal(signal.SIGHUP) is hear  # handled by vivify, then given back
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert capsys.readouterr().err.endswith("vivify: terminated\n")
    assert list(tmp_path.iterdir()) == []


def test_a_session_under_nohup_outlives_a_hang_up(material, tmp_path, monkeypatch):
    """`nohup` ignores SIGHUP so that the command outlives its terminal: it stays ignored."""
    import signal

    _hanging_up(monkeypatch, 3)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        out = tmp_path / "live.mp4"
        assert main(["live", str(material["portrait"]), "--input", str(material["clip"]), "--seconds", "0.5",
                     "-o", str(out)]) == 0
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert verify(out)["ai_generated"]


def _variable_rate_clip(path: Path, times: list[Fraction], sound: np.ndarray) -> Path:
    """A clip whose frames come at `times` (seconds), as a phone writes them, with `sound` (16 kHz)."""
    frames = list(driving_frames(seconds=len(times) / FPS, fps=FPS, size=128))
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=1000)
    video.height, video.width, video.pix_fmt = 128, 128, "yuv420p"
    audio = container.add_stream("aac", rate=16_000)
    audio.layout = "mono"
    for frame, shown in zip(frames, times, strict=True):
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        picture.pts, picture.time_base = round(shown * 1000), Fraction(1, 1000)
        container.mux(video.encode(picture))
    container.mux(video.encode(None))
    mux_audio(container, audio, sound)
    container.close()
    return path


# A phone's clip: 40 ms apart, then 200 ms for a stretch, then 40 ms again.
_PHONE_TIMES = ([Fraction(40 * i, 1000) for i in range(8)] + [Fraction(280 + 200 * i, 1000) for i in range(1, 5)]
                + [Fraction(1080 + 40 * i, 1000) for i in range(1, 9)])


def test_a_variable_frame_rate_file_is_paced_and_recorded_at_its_own_times(material, tmp_path, monkeypatch):
    """Delivered at its average rate, every frame of a phone's clip after its slow stretch came early, and the
    recording drifted from the file's sound. Each frame comes at its own time (on a clock only waiting moves),
    and the recording shows it then."""

    times = _PHONE_TIMES
    clip = _variable_rate_clip(tmp_path / "vfr.mp4", times, tone(24_000, 16_000))

    out = tmp_path / "live.mp4"
    assert main(["live", str(material["portrait"]), "--input", str(clip), "-o", str(out)]) == 0
    with av.open(str(out)) as container:
        shown = [frame.time for frame in container.decode(video=0)]
    np.testing.assert_allclose(shown, [float(time) for time in times], atol=0.002)

    published = _published_times(lambda: PacedFile(str(clip)), monkeypatch)
    np.testing.assert_allclose(np.array(published) - published[0], [float(time) for time in times], atol=1e-6)


class _ClockedCamera(FrameSource):
    """A camera on a clock that only `advance` moves: each frame is published as it falls due, every 40 ms, as
    the source's thread would publish it (there is none). Each advance must be one interval or more: a reader
    that finds no new frame would wait for one in real time."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__("camera 0")
        self._clock, self._due = clock, clock[0]

    def start(self) -> _ClockedCamera:
        self.advance(0.0)
        return self

    def advance(self, seconds: float) -> None:
        self._clock[0] += seconds
        while self._due <= self._clock[0]:
            self._publish(np.zeros((64, 64, 3), np.uint8))
            self._due += 0.040

    def close(self) -> None:
        pass


@pytest.mark.parametrize("ending", ["seconds", "quit", "paused"])
def test_the_stats_count_the_frames_the_recording_holds(tmp_path, monkeypatch, ending):
    """The recording holds every frame up to the last one shown (a dropped frame shows the one before): its
    `frames_in` and `dropped` are the stats'. Frames that arrive as the session stops (the one taken when `q`
    comes, those during the last render, those skipped while paused at the end) are neither shown nor
    dropped. A renderer of 100 ms a frame (2.5 intervals), on a clock that only rendering moves."""
    from vivify.live import capture, session
    from vivify.live.session import FileSink
    from vivify.provenance.marks import Marks

    clock = [100.0]
    monkeypatch.setattr(capture.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(session.time, "monotonic", lambda: clock[0])
    camera, commands = _ClockedCamera(clock), queue.SimpleQueue()
    rendered = [0]

    def render(frame: np.ndarray) -> np.ndarray:
        rendered[0] += 1
        if rendered[0] == 6 and ending != "seconds":
            commands.put(QUIT if ending == "quit" else PAUSE)
        camera.advance(0.100)
        return frame

    class _Sink(FileSink):
        def idle(self) -> None:  # while paused, time goes on as the next frame is awaited (one comes in it)
            camera.advance(0.050)

    out = tmp_path / "live.mp4"
    sink = _Sink(out, FPS, (64, 64), overwrite=False, marks=Marks.create())
    report = run_live(camera, sink, [render], commands=commands, seconds=None if ending == "quit" else 1.0)
    sink.close()
    with av.open(str(out)) as container:
        held = container.streams.video[0].frames
    assert (report["frames_in"], report["dropped"]) == (held, held - report["frames_out"])
    assert camera.frames_in > report["frames_in"]  # some arrived as it stopped


def test_a_looped_variable_frame_rate_file_repeats_its_own_times(material, tmp_path, monkeypatch):
    """Each pass of a looped phone's clip is paced and recorded at the file's own frame times, a pass after the
    one before: its last frame lasts as long as the interval before it (40 ms here), as a recording's last
    frame does. Later passes were paced one file's duration on (the last frame lasting 1 ms, as this file
    says), and recorded 40 ms apart throughout."""
    clip = _variable_rate_clip(tmp_path / "vfr.mp4", _PHONE_TIMES, tone(24_000, 16_000))
    one_pass = 2 * _PHONE_TIMES[-1] - _PHONE_TIMES[-2]
    due = [float(k * one_pass + shown) for k in range(3) for shown in _PHONE_TIMES]

    out = tmp_path / "live.mp4"
    assert main(["live", str(material["portrait"]), "--input", str(clip), "--loop", "--seconds", "2.9",
                 "-o", str(out)]) == 0
    with av.open(str(out)) as container:
        shown = [frame.time for frame in container.decode(video=0)]
    assert len(shown) > len(_PHONE_TIMES) + 8  # into the second pass's slow stretch, where the two timings part
    np.testing.assert_allclose(shown, due[:len(shown)], atol=0.002)

    published = _published_times(lambda: PacedFile(str(clip), loop=True), monkeypatch, frames=len(due))
    np.testing.assert_allclose(np.array(published) - published[0], due, atol=1e-6)
    # However long the session: a recording's times go on pass after pass (they are worked out as read).
    times = PacedFile(str(clip), loop=True).recorded_times()
    assert times is not None and times[100_000 * len(_PHONE_TIMES) + 5] == 100_000 * one_pass + _PHONE_TIMES[5]
