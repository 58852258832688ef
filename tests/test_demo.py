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


def test_the_demo_replaces_no_one_elses_files(tmp_path, capsys):
    """The demo writes several fixed names: into a folder that holds files already only with --overwrite, and
    never over a file given as its folder; both refused at once, with one line and exit 2."""
    from vivify.cli import main

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "astronaut.png").write_text("precious")
    assert main(["demo", "-o", str(folder)]) == 2
    assert capsys.readouterr().err == (f"vivify: error: {folder}: holds files already (use --overwrite to render "
                                       "the demo into it again)\n")
    assert (folder / "astronaut.png").read_text() == "precious"
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    assert main(["demo", "-o", str(taken)]) == 2
    assert capsys.readouterr().err == (f"vivify: error: {taken}: not a folder (the demo writes several files "
                                       "into one)\n")


def test_the_shared_media_are_found_beside_the_working_directory_or_the_checkout(tmp_path, monkeypatch):
    """`make demo` runs in the checkout, a user may run `vivify demo` anywhere: the real clips are looked for
    beside the current directory, then beside the checkout."""
    from pathlib import Path

    from vivify.io.media import find_shared

    media = tmp_path / "shared" / "media"
    (media / "portraits").mkdir(parents=True)
    (media / "portraits" / "own.png").write_bytes(b"")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert find_shared("portraits/own.png") == ((media / "portraits" / "own.png").resolve(), "current directory")
    beside_checkout = Path(__file__).resolve().parents[2] / "shared" / "media" / "portraits" / "einstein.jpg"
    found = find_shared("portraits/einstein.jpg")
    assert found == ((beside_checkout.resolve(), "repository root") if beside_checkout.is_file() else None)
