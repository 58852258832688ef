"""The visible label, the GB 45438 metadata label and the audit log, each on its own."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import encode_clip
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from vivify.demo import astronaut
from vivify.errors import VivifyError
from vivify.provenance import audit, metadata
from vivify.provenance.label import (
    DEFAULT_TEXT,
    LARGE_HEIGHT,
    FrameLabeler,
    LabelSettings,
    find_label,
    render_overlay,
    text_overlay,
)

CONTENT_ID = "0123456789abcdef"

# -- visible label ------------------------------------------------------------------------------------------


def _ink_rows(frame: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Rows where the label's white text is: bright pixels that the original did not have."""
    bright = (frame.min(axis=2) > 200) & (original.min(axis=2) < 200)
    return np.flatnonzero(bright.any(axis=1))


@pytest.mark.parametrize("size", [(512, 512), (1920, 1080), (256, 384)])
def test_label_is_conspicuous_for_two_seconds_then_small(size):
    width, height = size
    photo = cv2.resize(astronaut(), size, interpolation=cv2.INTER_AREA)
    labeler = FrameLabeler(LabelSettings(), size, fps=25.0)
    first, last_large, small = (labeler.apply(photo.copy(), index) for index in (0, 49, 50))
    large_rows = _ink_rows(first, photo)
    assert np.array_equal(first, last_large)
    # Glyphs at least 5% of the shorter side tall, at the bottom right, inside the frame.
    assert large_rows.max() - large_rows.min() + 1 >= LARGE_HEIGHT * min(size)
    changed = np.argwhere((first != photo).any(axis=2))
    assert changed[:, 0].min() > height / 2 and changed[:, 1].min() > width / 4
    small_rows = _ink_rows(small, photo)
    assert 0 < small_rows.max() - small_rows.min() < large_rows.max() - large_rows.min()


def test_label_has_a_contrast_box_and_moves_between_corners():
    white = np.full((400, 600, 3), 255, np.uint8)
    for position in ("top-left", "top-right", "bottom-left", "bottom-right"):
        labelled = FrameLabeler(LabelSettings(position=position), (600, 400), fps=None).apply(white.copy(), 0)
        ys, xs = np.nonzero((labelled != 255).any(axis=2))
        assert (ys.mean() < 200) == position.startswith("top")
        assert (xs.mean() < 300) == position.endswith("left")
        # Text on a dark box: readable on white.
        box = labelled[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert np.percentile(box, 50) < 160 and box.max() > 240


def test_label_found_in_frames_and_after_downscaling_but_not_in_a_photo():
    photo = astronaut()
    labeler = FrameLabeler(LabelSettings(position="top-left"), (512, 512), fps=30.0)
    for index in (0, 100):
        frame = labeler.apply(photo.copy(), index)
        assert find_label(frame)["found"]
        assert find_label(frame)["position"] == "top-left"
        half = cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA)
        assert find_label(half)["found"]
    assert not find_label(photo)["found"]


def test_label_wording_must_say_ai_generated():
    LabelSettings(text="人工智能合成")
    LabelSettings(text="AI-generated content / AI生成")
    with pytest.raises(VivifyError, match="must contain"):
        LabelSettings(text="made with vivify")
    with pytest.raises(VivifyError, match="must contain"):
        LabelSettings(text="AI")
    with pytest.raises(VivifyError, match="label position must be one of"):
        LabelSettings(position="middle")
    with pytest.raises(VivifyError, match="needs the name of who takes responsibility"):
        LabelSettings(enabled=False)
    with pytest.raises(VivifyError) as info:  # the text layout failed on it, with a traceback
        LabelSettings(text="AI生成\nmore")
    assert str(info.value) == "label text 'AI生成\\nmore' must be one line: no line break or control character"


def test_text_with_other_spaces_and_joiners_is_one_line_but_a_break_is_not():
    from vivify.provenance.label import is_one_line

    # A no-break space; Persian with a zero-width non-joiner; an emoji sequence with zero-width joiners.
    for text in ("Anna\u00a0Lee", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\U0001f469\u200d\U0001f3a4"):
        assert is_one_line(text)
        text_overlay(text, (256, 256), 0.07, "bottom-centre")  # laid out without an error
    for text in ("one\ntwo", "tab\there", "line\u2028separator", "para\u2029graph", "bell\x07"):
        assert not is_one_line(text)


def test_label_turned_off_leaves_frames_as_they_are():
    photo = astronaut()
    labeler = FrameLabeler(LabelSettings(enabled=False, responsible="Example Ltd"), (512, 512), fps=30.0)
    assert np.array_equal(labeler.apply(photo.copy(), 0), photo)


def test_label_wraps_on_a_narrow_frame():
    overlay = render_overlay(DEFAULT_TEXT, "bottom-right", (200, 800), LARGE_HEIGHT)
    assert overlay.keep.shape[1] <= 200 * 0.96
    assert overlay.x >= 0


@pytest.mark.parametrize("side", [256, 128])
def test_a_caption_too_long_for_its_cell_is_drawn_smaller_or_shortened_not_cut(side):
    """A caption wider than its cell: drawn smaller to fit (256² cells); one too long even at the smallest
    readable size ends in an ellipsis (128²). Either way the text keeps its padding on both sides: no letter is
    cut at the box's edge."""
    from vivify.compose.grid import CAPTION_HEIGHT
    from vivify.provenance.label import text_overlay

    cell = (side, side)
    overlay = text_overlay("Samuel Harris Altman, the chief executive of OpenAI", cell, CAPTION_HEIGHT,
                           "bottom-centre")
    width = overlay.keep.shape[1]
    drawn = overlay.apply(np.zeros((side, side, 3), np.uint8))  # white text on a black cell
    inked = np.flatnonzero(drawn.max(axis=(0, 2)) > 128)
    assert overlay.x >= 0 and overlay.x + width <= side
    left, right = inked.min() - overlay.x, overlay.x + width - 1 - inked.max()
    assert abs(left - right) <= 1, (left, right)


def test_captions_with_and_without_descenders_stand_on_one_baseline():
    # Boxes were as tall as each caption's ink: "tiny" sat 4 px higher than "astro" in the grid's row.
    overlays = [text_overlay(text, (256, 256), 0.07, "bottom-centre") for text in ("astro", "tiny", "Wagner")]
    assert len({(overlay.y, overlay.keep.shape[0]) for overlay in overlays}) == 1
    drawn = [overlay.apply(np.zeros((256, 256, 3), np.uint8))[..., 0] > 128 for overlay in overlays]
    # The bottom of "astro"'s ink is the baseline; the others reach below it only with their descenders.
    baseline = np.flatnonzero(drawn[0].any(axis=1)).max()
    for ink in drawn[1:]:
        assert ink[baseline - 2:baseline + 1].any() and np.flatnonzero(ink.any(axis=1)).max() > baseline


def test_a_very_long_caption_is_shortened_in_a_few_measures(monkeypatch):
    """The ellipsis's place is found by bisection: shortened a character at a time, 20,000 characters took minutes
    (a measure of the text for each)."""
    from vivify.provenance import label

    measured = []
    original = label._text_box
    monkeypatch.setattr(label, "_text_box", lambda font, text: measured.append(text) or original(font, text))
    overlay = text_overlay("W" * 20_000, (256, 256), 0.07, "bottom-centre")
    assert len(measured) < 40
    assert overlay.keep.shape[1] <= 256
    drawn = [text for text in measured if text.endswith("…")][-1]
    assert len(drawn) > 5  # as much as fits, not one letter


def test_captions_in_other_scripts_are_drawn_with_a_font_that_has_them(caplog):
    """Arabic, Hebrew or Cyrillic captions get a font that draws them (not a row of boxes); a character that no
    installed font draws is named in a warning."""
    import logging

    from vivify.compose.grid import Grid
    from vivify.provenance.label import FALLBACK_FONTS, font_for, font_path, missing_glyphs

    if not Path(FALLBACK_FONTS[0]).is_file():
        pytest.skip(f"{FALLBACK_FONTS[0]} not installed (make install installs it)")
    for text in ("مرحبا بالعالم", "שלום עולם", "Привет", DEFAULT_TEXT):
        assert missing_glyphs(font_for(text), text) == ""
    assert font_for(DEFAULT_TEXT) == font_path()  # the label keeps its own font
    assert missing_glyphs(font_path(), "مرحبا") == "مرحبا"
    with caplog.at_level(logging.WARNING):
        Grid(1, 2, (128, 128), captions=("Ada", "Ben 🎤"))
    assert caplog.messages == ["caption 2: no installed font draws 🎤 (shown as boxes)"]


# -- GB 45438 metadata ---------------------------------------------------------------------------------------


def test_aigc_label_fields():
    label = metadata.aigc_label(CONTENT_ID, b"media")
    fields = label["AIGC"]
    assert list(fields) == list(metadata.FIELDS)
    assert fields["Label"] == "1"
    assert fields["ProduceID"] == fields["PropagateID"] == CONTENT_ID
    assert fields["ContentProducer"] == fields["ContentPropagator"]
    assert fields["ReservedCode1"] == fields["ReservedCode2"]
    assert metadata.matches_content(fields, b"media")
    assert not metadata.matches_content(fields, b"other media")
    assert not metadata.matches_content({**fields, "ProduceID": "fedcba9876543210"}, b"media")
    with pytest.raises(ValueError, match="printable ASCII"):
        metadata.aigc_label("has space", b"media")


def _write_clip(path: Path, frames: int = 10, codec: str = "libx264") -> Path:
    return encode_clip(path, [np.full((64, 64, 3), index * 20, np.uint8) for index in range(frames)], codec=codec)


@pytest.mark.parametrize("muxer,suffix", [("mp4", ".mp4"), ("mov", ".mov"), ("webm", ".webm")])
def test_video_metadata_round_trip(tmp_path, muxer, suffix):
    source = _write_clip(tmp_path / f"plain{suffix}", codec="libvpx-vp9" if muxer == "webm" else "libx264")
    digest = metadata.media_digest(source, "video")
    labelled = tmp_path / f"labelled{suffix}"
    label = metadata.aigc_label(CONTENT_ID, digest)
    metadata.write_video_label(source, labelled, muxer, label)
    # PyAV (FFmpeg) reads it back, and the remux kept the media: the binding still holds.
    with av.open(str(labelled)) as container:
        tags = {key.upper(): value for key, value in container.metadata.items()}
    assert json.loads(tags["AIGC"]) == label
    fields = metadata.read_label(labelled, "video")
    assert fields == label["AIGC"]
    assert metadata.matches_content(fields, metadata.media_digest(labelled, "video"))


def test_copied_video_label_does_not_match(tmp_path):
    first = _write_clip(tmp_path / "first.mp4", frames=10)
    second = _write_clip(tmp_path / "second.mp4", frames=12)
    label = metadata.aigc_label(CONTENT_ID, metadata.media_digest(first, "video"))
    metadata.write_video_label(second, tmp_path / "copied.mp4", "mp4", label)
    fields = metadata.read_label(tmp_path / "copied.mp4", "video")
    assert fields is not None
    assert not metadata.matches_content(fields, metadata.media_digest(tmp_path / "copied.mp4", "video"))


def test_png_metadata_is_xmp_in_itxt_and_binds_the_pixels(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(astronaut()[:64, :64]).save(buffer, format="PNG")
    png = metadata.png_with_label(buffer.getvalue(), lambda digest: metadata.aigc_label(CONTENT_ID, digest))
    path = tmp_path / "frame.png"
    path.write_bytes(png)
    with Image.open(path) as image:
        xmp = image.info["XML:com.adobe.xmp"]
        assert np.array_equal(np.asarray(image), astronaut()[:64, :64])
    assert metadata.XMP_NAMESPACE in xmp and "TC260:AIGC" in xmp
    fields = metadata.read_label(path, "png")
    assert fields is not None and fields["ProduceID"] == CONTENT_ID
    assert metadata.matches_content(fields, metadata.media_digest(path, "png"))
    # The same label on other pixels: caught.
    other = io.BytesIO()
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    Image.fromarray(astronaut()[64:128, :64]).save(other, format="PNG", pnginfo=info)
    (tmp_path / "copied.png").write_bytes(other.getvalue())
    copied = metadata.read_label(tmp_path / "copied.png", "png")
    assert copied == fields
    assert not metadata.matches_content(copied, metadata.media_digest(tmp_path / "copied.png", "png"))


def test_jpeg_metadata_is_xmp_in_app1(tmp_path):
    path = tmp_path / "still.jpg"
    Image.fromarray(astronaut()).save(path, format="JPEG", quality=90)
    digest = metadata.media_digest(path, "jpeg")
    labelled = tmp_path / "labelled.jpg"
    # Re-saving would re-encode: the APP1 segment goes into the same bytes instead.
    data = path.read_bytes()
    xmp = b"http://ns.adobe.com/xap/1.0/\0" + metadata.xmp_packet(metadata.aigc_label(CONTENT_ID, digest))
    segment = b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp
    labelled.write_bytes(data[:2] + segment + data[2:])
    with Image.open(labelled) as image:
        assert b"TC260:AIGC" in image.info["xmp"]
    fields = metadata.read_label(labelled, "jpeg")
    assert fields is not None and fields["ProduceID"] == CONTENT_ID
    assert metadata.matches_content(fields, metadata.media_digest(labelled, "jpeg"))


def test_gif_label_in_a_comment(tmp_path):
    from vivify.io.writers import open_writer

    path = tmp_path / "clip.gif"
    with open_writer(path, Fraction(10), (32, 32)) as writer:
        for value in (0, 80, 160):
            writer.write(np.full((32, 32, 3), value, np.uint8))
    label = metadata.aigc_label(CONTENT_ID, metadata.media_digest(path, "gif"))
    metadata.write_gif_label(path, label)
    fields = metadata.read_label(path, "gif")
    assert fields == label["AIGC"]
    assert metadata.matches_content(fields, metadata.media_digest(path, "gif"))


def test_truncated_files_are_reported(tmp_path):
    png = tmp_path / "cut.png"
    buffer = io.BytesIO()
    Image.fromarray(astronaut()[:32, :32]).save(buffer, format="PNG")
    png.write_bytes(buffer.getvalue()[:60])
    with pytest.raises(VivifyError, match=r"cut\.png: truncated PNG file"):
        metadata.media_digest(png, "png")
    jpeg = tmp_path / "not.jpg"
    jpeg.write_bytes(b"hello")
    with pytest.raises(VivifyError, match=r"not\.jpg: not a JPEG file"):
        metadata.media_digest(jpeg, "jpeg")


# -- audit log -------------------------------------------------------------------------------------------


def test_audit_log_appends_records(tmp_path):
    audit.append_record(tmp_path, {"content_id": "a" * 16, "output": "one.mp4"})
    audit.append_record(tmp_path, {"content_id": "b" * 16, "output": "two.mp4", "label": {"text": "AI生成"}})
    records = list(audit.read_records(tmp_path))
    assert [r["content_id"] for r in records] == ["a" * 16, "b" * 16]
    assert records[1]["label"]["text"] == "AI生成"
    assert all("time" in r for r in records)
    assert (tmp_path / audit.LOG_NAME).stat().st_mode & 0o777 == 0o600
