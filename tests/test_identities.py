"""The studio's protected-identity registry: another photo of a registered person is matched, others are not."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_MEDIA

from vivify.demo import astronaut, face_crop
from vivify.errors import VivifyError
from vivify.eval import identities as identities_eval
from vivify.io.image import load_portrait
from vivify.io.video import open_video
from vivify.studio.identities import ProtectedIdentities


def _another_photo_of_her() -> np.ndarray:
    """The astronaut photo shrunk, turned 8°, warmer and darker, and framed differently: not the registered image."""
    image = astronaut()
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((220.0, 130.0), 8.0, 0.8), (512, 512),
                            borderMode=cv2.BORDER_REPLICATE)
    shifted = np.clip(turned.astype(np.float32) * (1.1, 0.95, 0.8) - 12.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(shifted[40:420, 60:460])


def _no_face() -> np.ndarray:
    ramp = np.linspace(0, 255, 400, dtype=np.float32)
    return np.ascontiguousarray(np.stack([np.tile(ramp, (300, 1))] * 3, axis=2).astype(np.uint8))


def _frame(path: Path, index: int) -> np.ndarray:
    with open_video(path) as video:
        for i, frame in enumerate(video.frames()):
            if i == index:
                return frame
    raise AssertionError(f"{path} has no frame {index}")


@pytest.fixture()
def registry(tmp_path: Path) -> ProtectedIdentities:
    # A folder that does not exist yet: the registry makes it, and its tables, on first use.
    return ProtectedIdentities(tmp_path / "data" / "protected.sqlite")


def test_an_empty_registry_matches_nothing(registry):
    assert registry.labels() == []
    assert registry.match(astronaut()) is None
    assert registry.distances(astronaut()) == {}


def test_another_photo_of_a_protected_person_is_matched(registry, face):
    assert registry.add("Astronaut", face, "astronaut.png") == 1
    other = _another_photo_of_her()
    assert registry.match(other) == "Astronaut"
    assert registry.distances(other)["Astronaut"] < 0.4  # well inside the threshold, not a borderline call


def test_a_small_face_in_a_full_hd_frame_is_matched(registry, face):
    registry.add("Astronaut", face, "astronaut.png")
    # Her face box is 87 px tall in the 512 px photo: shrink it to ~45 px and put it in a 1920×1080 frame.
    small = cv2.resize(astronaut(), None, fx=0.52, fy=0.52, interpolation=cv2.INTER_AREA)
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    frame[700:700 + small.shape[0], 1500:1500 + small.shape[1]] = small
    assert registry.match(frame) == "Astronaut"


@pytest.mark.parametrize("tilt", [50.0, 90.0])
def test_a_tilted_head_is_matched(registry, face, tilt):
    """dlib's detector and alignment are made for upright faces; a head on its side must not get through."""
    registry.add("Astronaut", face, "astronaut.png")
    height, width = face.shape[:2]
    tilted = cv2.warpAffine(face, cv2.getRotationMatrix2D((width / 2, height / 2), tilt, 1.0), (width, height),
                            borderMode=cv2.BORDER_REPLICATE)
    assert registry.match(tilted) == "Astronaut"


def test_a_photo_of_several_faces_is_not_registered(registry, face):
    """Every face of a group photo went under the one label: the others were then refused in that name."""
    pair = np.ascontiguousarray(np.hstack([face, face[:, ::-1]]))
    with pytest.raises(VivifyError) as error:
        registry.add("Astronaut", pair, "pair.png")
    assert str(error.value) == "pair.png: 2 faces found: register a photo of the one person alone (crop it)"
    assert registry.labels() == []


def test_a_photo_turned_a_quarter_is_matched(registry):
    """Einstein turned a quarter anticlockwise got through the gate (0.71 from himself): MediaPipe's landmarks
    put his eyes 16° off the quarter, and turned upright by them dlib described him wrongly."""
    einstein = SHARED_MEDIA / "portraits" / "einstein.jpg"
    if not einstein.exists():
        pytest.skip(f"{einstein} not found: the shared media folder is not beside the checkout")
    photo = cv2.resize(load_portrait(einstein), (800, 800), interpolation=cv2.INTER_AREA)
    registry.add("Einstein", photo, "einstein.jpg")
    for quarters in (1, 3):
        assert registry.match(np.ascontiguousarray(np.rot90(photo, quarters))) == "Einstein", quarters


def test_other_people_and_images_without_a_face_are_not_matched(registry, face):
    registry.add("Astronaut", face, "astronaut.png")
    assert registry.match(_no_face()) is None
    assert registry.distances(_no_face()) == {}
    einstein = SHARED_MEDIA / "portraits" / "einstein.jpg"
    if not einstein.exists():
        pytest.skip(f"{einstein} not found: the shared media folder is not beside the checkout")
    assert registry.match(load_portrait(einstein)) is None
    assert registry.distances(load_portrait(einstein))["Astronaut"] > ProtectedIdentities.THRESHOLD


def test_labels_count_descriptors_and_remove_forgets(registry, face):
    assert registry.add("Astronaut", face, "a.png") == 1
    assert registry.add("Astronaut", _another_photo_of_her(), "b.png") == 1  # a second photo of her
    assert registry.add("Bystander", face_crop(200), "c.png") == 1
    assert registry.labels() == [("Astronaut", 2), ("Bystander", 1)]
    # The registry lives in the file: another instance (another thread, the CLI) sees the same.
    assert ProtectedIdentities(registry.path).labels() == [("Astronaut", 2), ("Bystander", 1)]
    assert registry.remove("Astronaut") is True
    assert registry.remove("Astronaut") is False
    assert registry.labels() == [("Bystander", 1)]
    assert registry.match(_another_photo_of_her()) == "Bystander"
    assert registry.remove("Bystander") is True
    assert registry.match(_another_photo_of_her()) is None


def test_adding_a_photo_again_stores_nothing_new(registry, face):
    """The same photo added twice was stored twice: copies that widen nothing filled the registry and its counts."""
    assert registry.add("Astronaut", face, "astronaut.png") == 1
    assert registry.add("Astronaut", face.copy(), "astronaut.png") == 0
    # The same photo decoded by another JPEG library: pixels a level off, a descriptor ~0.03 away.
    noise = np.random.default_rng(0).integers(-1, 2, face.shape)
    assert registry.add("Astronaut", np.clip(face + noise, 0, 255).astype(np.uint8), "copy.jpg") == 0
    assert registry.labels() == [("Astronaut", 1)]
    # Another photo of her still widens what the gate recognises, and each label keeps its own photos.
    assert registry.add("Astronaut", _another_photo_of_her(), "b.png") == 1
    assert registry.add("Someone", face, "astronaut.png") == 1
    assert registry.labels() == [("Astronaut", 2), ("Someone", 1)]


def test_protect_add_says_when_the_photo_was_registered_already(tmp_path, capsys, face):
    from vivify.cli import main

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    command = ["protect", "add", "Astronaut", str(photo), "--data-dir", str(tmp_path)]
    assert main(command) == 0
    assert capsys.readouterr().out == "Astronaut: protected (from astronaut.png)\n"
    assert main(command) == 0
    assert capsys.readouterr().out == "Astronaut: nothing added (the faces in astronaut.png are registered already)\n"
    assert main(["protect", "list", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "Astronaut\t1 face\n"


def test_a_small_face_is_registered_from_one_scan_at_each_scale(registry, monkeypatch):
    """With no face of 80 px or more, the upsampled search was asked for twice: once with the levelled search,
    once without it only to count the same faces (DlibFaceMeasure's small cache usually spared the second HOG
    scan, but not when the studio's checks in other threads had pushed the image out of it)."""
    from vivify.eval.metrics import DlibFaceMeasure

    scans: list[int | None] = []
    detect = DlibFaceMeasure.detect

    def counted(self, image, upsample=None):
        scans.append(upsample)
        return detect(self, image, upsample)

    monkeypatch.setattr(DlibFaceMeasure, "detect", counted)
    assert registry.add("Astronaut", face_crop(160), "small.png") == 1  # her face ~55 px: found upsampled only
    assert scans == [0, 1]


def test_adding_an_image_without_a_face_names_the_file(registry):
    with pytest.raises(VivifyError) as caught:
        registry.add("Nobody", _no_face(), "blank.png")
    assert str(caught.value) == "no face found in blank.png"
    assert registry.labels() == []


@pytest.mark.parametrize("label", ["", "   ", "two\nlines", "tab\there", "x" * 201])
def test_labels_must_be_printable_text(registry, face, label):
    with pytest.raises(VivifyError, match="invalid label"):
        registry.add(label, face, "astronaut.png")


def test_the_registry_can_be_used_from_several_threads(registry, face):
    registry.add("Astronaut", face, "astronaut.png")
    barrier = threading.Barrier(2)

    def check(image: np.ndarray) -> str | None:
        barrier.wait(timeout=30)  # both threads reach SQLite and dlib at the same time
        return registry.match(image)

    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(check, [_another_photo_of_her(), _no_face()]))
    assert found == ["Astronaut", None]


def test_real_frames_of_a_registered_person_are_matched_and_others_are_not(registry):
    katie = SHARED_MEDIA / "talking" / "hdtf_katiehill.mp4"
    other = SHARED_MEDIA / "driving" / "vox_driving2.mp4"
    if not (katie.exists() and other.exists()):
        pytest.skip(f"{katie.parent.parent} not found: the shared media folder is not beside the checkout")
    registry.add("Katie Hill", _frame(katie, 0), f"{katie.name} frame 0")
    assert registry.match(_frame(katie, 120)) == "Katie Hill"
    assert registry.match(_frame(katie, 199)) == "Katie Hill"
    assert registry.match(_frame(other, 100)) is None
    assert registry.match(astronaut()) is None


def test_the_evaluation_needs_the_shared_media(tmp_path, capsys):
    from vivify.cli import main

    missing, a_file, empty = tmp_path / "no-such-folder", tmp_path / "clip.mp4", tmp_path / "empty"
    a_file.write_bytes(b"")
    empty.mkdir()
    for folder, problem in [(missing, "not found (the shared media folder)"),
                            (a_file, "is not a folder (give the shared media folder)"),
                            (empty, f"holds none of the clips ({', '.join(identities_eval.CLIPS)})")]:
        assert main(["eval", "identities", str(folder)]) == 2
        assert capsys.readouterr().err == f"vivify: error: {folder}: {problem}\n"


def test_the_evaluation_reports_n_a_where_no_face_was_measured(tmp_path, capsys, face):
    """Probes with no face have no distance, on both sides alike, and are counted on both: the genuine spread
    read "nan" and the impostor median "inf" (a face-less impostor probe counted as an infinite distance)."""
    import json

    from conftest import encode_clip

    from vivify.cli import main

    folder = tmp_path / "media"
    (folder / "driving").mkdir(parents=True)
    (folder / "portraits").mkdir()
    # One person, seen in frame 0 only; a face-less "portrait" beside the astronaut as impostors.
    encode_clip(folder / "driving" / "vox_driving2.mp4", [face] + [np.full_like(face, 90 + i) for i in range(14)])
    cv2.imwrite(str(folder / "portraits" / "einstein.jpg"), _no_face())
    json_path = tmp_path / "identities.json"
    assert main(["eval", "identities", str(folder), "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "inf" not in out
    assert "genuine distance: min n/a, median n/a, max n/a; probes with no face found: 10" in out
    assert "impostor distance: min" in out and "; probes with no face found: 1" in out
    report = json.loads(json_path.read_text())
    assert report["genuine_distance"] == {"min": None, "median": None, "max": None}
    assert report["farthest_genuine"] is None
    assert (report["genuine_no_face"], report["impostor_no_face"], report["impostor_attempts"]) == (10, 1, 2)
    astronaut_distance = report["closest_impostor"]["distance"]
    assert report["impostor_distance"]["median"] == astronaut_distance  # over the probe with a face only
    # The rates stay as they were: no face is a reject on both sides, a false reject and no false accept.
    at_threshold = next(r for r in report["rates"] if r["threshold"] == report["threshold"])
    assert at_threshold["false_rejects"] == 10 and at_threshold["frr"] == 1.0
    assert at_threshold["false_accepts"] == (astronaut_distance <= report["threshold"])


def test_the_evaluation_checks_the_folder_before_looking_under_it(tmp_path, capsys, monkeypatch):
    """The folder is checked before anything under it is listed: given `/`, the whole disk was walked (30 s) to
    protect its files from --json before "holds none of the clips"."""
    from vivify.cli import main

    def walked(self, pattern):
        raise AssertionError(f"{self} was walked")

    monkeypatch.setattr(Path, "rglob", walked)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "identities", str(empty), "--json", str(tmp_path / "figures.json")]) == 2
    assert capsys.readouterr().err.startswith(f"vivify: error: {empty}: holds none of the clips")
    # The files it reads are still protected from the figures.
    clip = empty / "driving" / "vox_driving2.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"")
    assert main(["eval", "identities", str(empty), "--json", str(clip)]) == 2
    assert capsys.readouterr().err == f"vivify: error: {clip}: is an input file; choose another output\n"
