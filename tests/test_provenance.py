"""The whole chain: `vivify animate` marks its output, `vivify verify` reads every mark back.

A 3 s clip of the astronaut (256², 25 fps) is animated once per module; the checks then read its frames, its
metadata, its manifest and its watermark, attack it (re-encode with PyAV, metadata dropped), tamper with its
label, and compare with an unmarked clip. The audit log lives in the session's temporary data folder.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import encode_clip
from PIL import Image

from vivify.cli import main
from vivify.demo import driving_frames
from vivify.pipeline import animate
from vivify.provenance import audit, metadata
from vivify.provenance.label import LabelSettings, find_label
from vivify.provenance.marks import Marks
from vivify.provenance.verify import verify

FPS = Fraction(25)
SECONDS = 3.0


def write_plain_clip(path: Path, frames: list[np.ndarray], crf: int = 18) -> Path:
    """H.264 without any mark: the material a user brings."""
    return encode_clip(path, frames, fps=FPS, crf=crf)


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def material(tmp_path_factory, face) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("provenance")
    portrait = folder / "portrait.png"
    Image.fromarray(face).save(portrait)
    driving = write_plain_clip(folder / "driving.mp4",
                               list(driving_frames(seconds=SECONDS, fps=float(FPS), size=128)))
    out = folder / "animated.mp4"
    assert main(["animate", str(portrait), str(driving), "-o", str(out), "--label-position", "top-left"]) == 0
    return {"folder": folder, "portrait": portrait, "driving": driving, "out": out}


def test_every_mark_is_read_back_with_one_content_id(material):
    report = verify(material["out"])
    assert report["ai_generated"]
    content_id = report["content_id"]
    assert len(content_id) == 16 and int(content_id, 16) >= 0
    assert report["visible_label"]["found"] and report["visible_label"]["position"] == "top-left"
    assert report["metadata"]["found"] and report["metadata"]["matches_content"]
    assert report["metadata"]["aigc"]["ProduceID"] == content_id
    assert report["c2pa"]["found"] and report["c2pa"]["validation_state"] in ("Valid", "Trusted")
    assert report["c2pa"]["content_id"] == content_id
    assert report["c2pa"]["ingredients"] == ["portrait.png", "driving.mp4"]
    assert report["watermark"]["found"] and report["watermark"]["payload"] == content_id


def test_output_keeps_its_contract_and_shows_the_label(material):
    frames = decode(material["out"])
    assert len(frames) == round(SECONDS * FPS)
    assert frames[0].shape == (256, 256, 3)
    assert find_label(frames[0])["found"] and find_label(frames[60])["found"]
    with av.open(str(material["out"])) as container:
        tags = dict(container.metadata)
    assert json.loads(tags["AIGC"])["AIGC"]["Label"] == "1"


def test_audit_log_records_the_generation(material, data_dir):
    content_id = verify(material["out"])["content_id"]
    record = next(r for r in audit.read_records(data_dir) if r["content_id"] == content_id)
    assert record["output"] == str(material["out"])
    assert record["frames"] == round(SECONDS * FPS)
    hashes = {Path(i["path"]).name: i["sha256"] for i in record["inputs"]}
    assert hashes == {"portrait.png": audit.file_sha256(material["portrait"]),
                      "driving.mp4": audit.file_sha256(material["driving"])}
    assert record["command"][:2] == ["vivify", "animate"]
    assert record["label"] == {"text": "AI生成 / AI-generated", "position": "top-left", "enabled": True}
    assert record["signer"]


def test_a_callers_marks_name_the_inputs_and_mark_one_output_only(material, tmp_path):
    """Marks made for a label or a signer only (as the README shows for the Python API) lost the inputs from the
    manifest and the audit log; passed again, they gave a second video the first one's content id."""
    marks = Marks.create(label=LabelSettings(position="top-left"))
    out = animate(material["portrait"], material["driving"], tmp_path / "api.mp4", marks=marks)
    report = verify(out)
    assert report["c2pa"]["ingredients"] == ["portrait.png", "driving.mp4"]
    assert report["visible_label"]["position"] == "top-left"
    with pytest.raises(ValueError, match=f"these marks \\(content id {report['content_id']}\\) are another output's"):
        animate(material["portrait"], material["driving"], tmp_path / "again.mp4", marks=marks)
    assert not (tmp_path / "again.mp4").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["api.mp4"]


def test_watermark_outlives_a_reencode_that_drops_the_other_machine_marks(material):
    attacked = write_plain_clip(material["folder"] / "reencoded.mp4", decode(material["out"]), crf=28)
    report = verify(attacked)
    assert not report["metadata"]["found"] and not report["c2pa"]["found"]
    assert report["watermark"]["found"]
    assert report["watermark"]["payload"] == verify(material["out"])["content_id"]
    assert report["ai_generated"]


def test_a_copied_or_altered_label_does_not_match(material):
    original = metadata.read_label(material["out"], "video")
    plain = write_plain_clip(material["folder"] / "plain.mp4", decode(material["driving"]))
    copied = material["folder"] / "copied.mp4"
    metadata.write_video_label(plain, copied, "mp4", {"AIGC": original})
    altered = material["folder"] / "altered.mp4"
    metadata.write_video_label(material["out"], altered, "mp4", {"AIGC": {**original, "ProduceID": "0" * 16}})
    for path in (copied, altered):
        report = verify(path)
        assert report["metadata"]["found"] and not report["metadata"]["matches_content"]


def test_unmarked_clip_is_reported_as_unmarked(material, capsys):
    report = verify(material["driving"])
    assert not report["ai_generated"] and report["content_id"] is None
    assert not any(report[mark]["found"] for mark in ("visible_label", "metadata", "c2pa", "watermark"))
    assert main(["verify", str(material["driving"])]) == 1
    assert main(["verify", "--json", str(material["out"])]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) >= {"ai_generated", "content_id", "visible_label", "metadata", "c2pa", "watermark"}


def test_verify_checks_every_file_given(material, capsys):
    """Exit 0 only when every file is marked, 1 when one is not, 2 when one cannot be read; each file that
    can be read is reported, in order, whatever comes before it."""
    missing = material["folder"] / "missing.mp4"
    assert main(["verify", str(material["out"]), str(material["out"])]) == 0
    assert main(["verify", str(material["out"]), str(material["driving"])]) == 1
    assert main(["verify", "--json", str(missing), str(material["driving"]), str(material["out"])]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"vivify: error: {missing}: file not found\n"
    # With --json, one line for every file, the one that could not be read included.
    reports = [json.loads(line) for line in captured.out.strip().splitlines()[-3:]]
    assert reports[0] == {"file": str(missing), "error": f"{missing}: file not found"}
    assert [(r["file"], r["ai_generated"]) for r in reports[1:]] == [(str(material["driving"]), False),
                                                                      (str(material["out"]), True)]


def test_a_file_cut_before_its_first_frame_still_shows_its_metadata_and_manifest(material, capsys):
    # It was refused as unreadable, though the labels at its start could be read.
    data = material["out"].read_bytes()
    cut = material["folder"] / "cut_early.mp4"
    cut.write_bytes(data[:data.index(b"mdat") + 200])
    report = verify(cut)
    assert report["ai_generated"] and report["metadata"]["found"] and report["c2pa"]["found"]
    assert not report["metadata"]["matches_content"] and report["c2pa"]["validation_state"] == "Invalid"
    assert not report["watermark"]["found"] and report["watermark"]["unread"].startswith("corrupt video data")
    assert main(["verify", str(cut)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("  visible label: not read: corrupt video data") and lines[-1].startswith(
        "  watermark: not read: corrupt video data")


def test_an_image_of_one_pixel_is_reported_as_unmarked(tmp_path, capsys):
    # It was refused as too small to hold a face (exit 2): the portrait loader's limit, not verify's.
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    assert main(["verify", str(tiny)]) == 1
    assert capsys.readouterr().out.startswith(f"{tiny}: no AI-generation mark found\n")


def test_an_invalid_manifest_is_reported_with_what_failed_not_its_trust():
    # A changed file's manifest read "Invalid, ... (issuer ... is not in a trust list)": the wrong reason.
    from vivify.provenance.verify import summary

    c2pa = {"found": True, "validation_state": "Invalid", "trusted": False, "signer": "vivify on host",
            "issuer": "CN=vivify local CA", "errors": ["assertion.bmffHash.mismatch"]}
    report = {"file": "out.mp4", "ai_generated": True, "content_id": "0123456789abcdef",
              "visible_label": {"found": True, "position": "bottom-right"}, "metadata": {"found": False},
              "c2pa": c2pa, "watermark": {"found": False}}
    assert "  C2PA: Invalid, signed by vivify on host (assertion.bmffHash.mismatch)" in summary(report).splitlines()
    c2pa.update(validation_state="Valid", errors=[])
    assert ("  C2PA: Valid, signed by vivify on host (issuer CN=vivify local CA is not in a trust list)"
            in summary(report).splitlines())


def test_verify_reads_a_video_renamed_as_an_image(material):
    """What a file is comes from its content: a marked video renamed .jpg is still read as the video."""
    renamed = material["folder"] / "animated.jpg"
    renamed.write_bytes(material["out"].read_bytes())
    assert verify(renamed)["content_id"] == verify(material["out"])["content_id"] is not None


def test_frame_folder_output_marks_every_frame(material):
    folder = material["folder"] / "frames"
    assert main(["animate", str(material["portrait"]), str(material["driving"]), "-o", f"{folder}/"]) == 0
    frames = sorted(folder.glob("frame_*.png"))
    assert len(frames) == round(SECONDS * FPS)
    reports = [verify(frames[0]), verify(frames[-1])]
    assert reports[0]["content_id"] == reports[1]["content_id"]
    for report in reports:
        assert report["visible_label"]["found"] and report["metadata"]["matches_content"]
        assert report["c2pa"]["validation_state"] in ("Valid", "Trusted")
        assert report["watermark"]["payload"] == report["content_id"]
    # Re-shared as a WebP (sites convert images so): the metadata and manifest are gone, the pixels' marks stay.
    webp = folder / "shared.webp"
    Image.open(frames[0]).save(webp, quality=85)
    shared = verify(webp)
    assert shared["ai_generated"] and shared["visible_label"]["found"]
    assert not shared["metadata"]["found"] and not shared["c2pa"]["found"]
    assert shared["watermark"]["payload"] == reports[0]["content_id"]


@pytest.mark.parametrize("suffix", [".gif", ".webm"])
def test_gif_and_webm_outputs_are_marked(material, suffix):
    out = material["folder"] / f"animated{suffix}"
    assert main(["animate", str(material["portrait"]), str(material["driving"]), "-o", str(out)]) == 0
    report = verify(out)
    assert report["visible_label"]["found"] and report["metadata"]["matches_content"]
    assert report["watermark"]["payload"] == report["content_id"]
    # C2PA: GIF carries a manifest; WebM is a format c2pa cannot sign, and verify says so.
    if suffix == ".gif":
        assert report["c2pa"]["validation_state"] in ("Valid", "Trusted")
    else:
        assert not report["c2pa"]["found"] and report["c2pa"]["supported"] is False


def test_label_off_only_with_a_named_responsibility(material, data_dir):
    out = material["folder"] / "unlabelled.mp4"
    args = ["animate", str(material["portrait"]), str(material["driving"]), "-o", str(out)]
    assert main([*args, "--no-visible-label", "Example Newsroom Ltd"]) == 0
    report = verify(out)
    assert not report["visible_label"]["found"]
    assert report["metadata"]["matches_content"] and report["c2pa"]["found"] and report["watermark"]["found"]
    assert report["c2pa"]["extra"]["visible_label"]["responsible"] == "Example Newsroom Ltd"
    record = next(r for r in audit.read_records(data_dir) if r["content_id"] == report["content_id"])
    assert record["label"]["enabled"] is False and record["label"]["responsible"] == "Example Newsroom Ltd"


@pytest.mark.parametrize("label_text,message", [
    ("made by a computer", "vivify: error: label text 'made by a computer' must contain"),
])
def test_bad_label_wording_is_refused(material, capsys, label_text, message):
    out = material["folder"] / "bad.mp4"
    code = main(["animate", str(material["portrait"]), str(material["driving"]), "-o", str(out),
                 "--label-text", label_text])
    assert code == 2
    assert capsys.readouterr().err.startswith(message)
    assert not out.exists()


def test_unusable_certificate_fails_before_rendering(material, tmp_path):
    out = tmp_path / "out.mp4"
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    result = subprocess.run(
        [sys.executable, "-m", "vivify.cli", "animate", str(material["portrait"]), str(material["driving"]),
         "-o", str(out), "--sign-cert", str(tmp_path / "missing.pem"), "--sign-key", str(key)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"vivify: error: {tmp_path / 'missing.pem'}: file not found"
    assert list(tmp_path.iterdir()) == [key]


def test_verify_says_how_to_check_a_folder_of_frames(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"vivify: error: {tmp_path}: is a folder, not a video or image (a folder of "
                                       f"frames: name them, {tmp_path}/*.png)\n")


@pytest.mark.parametrize("content", [b"", b"plain text, not media\n", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"])
def test_verify_refuses_non_media_and_truncated_files(tmp_path, capsys, content):
    path = tmp_path / "suspect.mp4"
    path.write_bytes(content)
    assert main(["verify", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vivify: error: ") and "suspect.mp4" in error and error.count("\n") == 1


@pytest.mark.parametrize("name", ["notes.png", "notes.jpg"])
def test_verify_says_what_is_wrong_with_a_file_named_as_an_image(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_text("plain text, not an image\n" * 20)
    assert main(["verify", str(path)]) == 2
    assert capsys.readouterr().err == (f"vivify: error: {path}: not a readable image (its content is not PNG, JPEG, "
                                       "WebP or GIF)\n")


@pytest.mark.parametrize(("name", "kind"), [("scan.bmp", "BMP"), ("scan.tiff", "TIFF")])
def test_verify_names_an_image_format_it_does_not_read(tmp_path, capsys, name, kind):
    path = tmp_path / name
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    assert main(["verify", str(path)]) == 2
    assert capsys.readouterr().err == (f"vivify: error: {path}: a {kind} image: verify reads videos, and PNG, JPEG, "
                                       "WebP and GIF images\n")


def test_verify_refuses_an_image_over_the_pixel_limit(tmp_path, capsys):
    """A decompression bomb is refused from its header, as a portrait would be, not opened."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 10000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    assert main(["verify", str(bomb)]) == 2
    assert capsys.readouterr().err == f"vivify: error: {bomb}: image is 200 megapixels, over the 50 megapixel limit\n"


def test_verify_reads_the_marks_of_a_download_cut_short(material):
    """The frames a cut file holds still carry the label and the watermark; the report says so instead of
    failing on the missing end (which `animate` refuses as a driving video)."""
    cut = material["folder"] / "cut_short.mp4"
    data = material["out"].read_bytes()
    cut.write_bytes(data[:len(data) * 4 // 5])
    report = verify(cut)
    assert report["ai_generated"] and report["visible_label"]["found"]
    assert report["watermark"]["payload"] == verify(material["out"])["content_id"]


def test_verify_refuses_a_truncated_video(material, capsys):
    cut = material["folder"] / "cut.mp4"
    cut.write_bytes(material["out"].read_bytes()[:2000])
    assert main(["verify", str(cut)]) == 2
    assert capsys.readouterr().err.startswith("vivify: error: ")
