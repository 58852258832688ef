"""The visible label: "AI生成 / AI-generated" drawn on the frames, the explicit label of GB 45438-2025.

For the first 2 s of a video (and on images) the label is conspicuous: its glyphs are at least 5% of the
frame's shorter side tall. After that it stays on every frame, smaller, in the same corner. White text on a
dark translucent box keeps it readable on any background. The overlay is rendered once per size and
blended only over its own box, so labelling costs a fraction of a millisecond a frame.

`find_label` checks frames for it (normalised cross-correlation with the label rendered for that frame
size, in each corner and at a few scales, so a downscaled or slightly cropped copy still matches).
"""

from __future__ import annotations

import functools
import math
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vivify.errors import VivifyError

DEFAULT_TEXT = "AI生成 / AI-generated"
POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")
CONSPICUOUS_SECONDS = 2.0
LARGE_HEIGHT = 0.05  # glyph height, a fraction of the frame's shorter side (GB 45438: conspicuous)
SMALL_HEIGHT = 0.025
MIN_SMALL_PX = 10  # smaller text is no longer readable
MARGIN = 0.02
BOX_OPACITY = 0.75
MATCH_THRESHOLD = 0.65  # normalised cross-correlation: labels (also downscaled to half) score > 0.8, real media < 0.45
# Sizes the checked frame may have been made at, relative to its own: as is, slightly cropped or padded,
# downscaled to 2/3 or 1/2.
_ORIGINAL_SCALES = (1.0, 1 / 0.9, 0.9, 1.5, 2.0)

# Fonts that draw both CJK and Latin: the set-up installs fonts-wqy-microhei (Debian); the others are
# where common distributions and macOS keep theirs. VIVIFY_LABEL_FONT overrides.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
)


@dataclass(frozen=True)
class LabelSettings:
    """What the visible label says and where; `responsible` is set only when it is turned off."""

    text: str = DEFAULT_TEXT
    position: str = "bottom-right"
    enabled: bool = True
    responsible: str | None = None

    def __post_init__(self) -> None:
        check_wording(self.text)
        if not is_one_line(self.text):
            raise VivifyError(f"label text {self.text!r} must be one line: no line break or control character")
        if self.position not in POSITIONS:
            raise VivifyError(f"label position must be one of {', '.join(POSITIONS)}, not {self.position!r}")
        if not self.enabled and not (self.responsible or "").strip():
            raise VivifyError("turning the visible label off needs the name of who takes responsibility")

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"text": self.text, "position": self.position, "enabled": self.enabled}
        if self.responsible:
            data["responsible"] = self.responsible
        return data


def is_one_line(text: str) -> bool:
    """Whether `text` can be laid out as one line: no line or paragraph break and no control character (Unicode
    categories Cc, Zl, Zp), on which the layout fails. Other spaces (a no-break space) and format characters
    (the joiners that Persian and emoji sequences use) are text like any other."""
    return not any(unicodedata.category(character) in ("Cc", "Zl", "Zp") for character in text)


def check_wording(text: str) -> None:
    """The label must say it is AI-made: "AI" or "人工智能", and "生成" or "合成"."""
    if not ("AI" in text or "人工智能" in text) or not ("生成" in text or "合成" in text):
        raise VivifyError(f"label text {text!r} must contain \"AI\" or \"人工智能\" and \"生成\" or \"合成\"")


# For text that the label's font has no glyphs for (a caption in Arabic, Hebrew, Greek or Cyrillic): the set-up
# installs fonts-dejavu-core. Right-to-left text is laid out by Pillow's raqm engine.
FALLBACK_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)


def font_path() -> Path:
    override = os.environ.get("VIVIFY_LABEL_FONT")
    candidates = (override,) if override else FONT_CANDIDATES
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    if override:
        raise VivifyError(f"{override}: label font not found (VIVIFY_LABEL_FONT)")
    raise VivifyError("no CJK-capable font for the visible label: install fonts-wqy-microhei (make install does), "
                      "or set VIVIFY_LABEL_FONT to a .ttf/.ttc file")


def font_for(text: str) -> Path:
    """The label's font (`font_path`) where it draws every character of `text`, else the first fallback font
    that does; the label's font where none does."""
    return _first_drawing(text, font_path())


@functools.lru_cache(maxsize=64)
def _first_drawing(text: str, primary: Path) -> Path:
    fonts = [primary, *(Path(path) for path in FALLBACK_FONTS if Path(path).is_file())]
    return next((path for path in fonts if not missing_glyphs(path, text)), primary)


def missing_glyphs(path: Path, text: str) -> str:
    """The characters of `text` (each once, in order) that the font at `path` has no glyph for: it draws them
    as its "missing" box, the glyph of a code point no font has."""
    font = ImageFont.truetype(str(path), 32)

    def drawn(character: str) -> tuple[tuple[int, int], bytes]:
        mask = font.getmask(character)
        return mask.size, bytes(mask)

    missing = drawn("\U0010fffd")  # a private-use code point, in no font
    return "".join(ch for ch in dict.fromkeys(text) if not ch.isspace() and drawn(ch) == missing)


@dataclass(frozen=True)
class Overlay:
    """A rendered label: premultiplied colour and opacity, and its top-left corner in the frame."""

    colour: np.ndarray  # H×W×3 uint16: colour × alpha × 256
    keep: np.ndarray  # H×W×3 uint16: (1 - alpha) × 256, what stays of the frame
    x: int
    y: int

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Blend onto `frame` (RGB uint8) in place; returns it."""
        height, width = self.keep.shape[:2]
        box = frame[self.y:self.y + height, self.x:self.x + width]
        # Fixed point in uint16: several times faster than float for a 1080p label.
        blended = box * self.keep
        blended += self.colour
        box[...] = blended >> 8
        return frame


@functools.lru_cache(maxsize=64)
def render_overlay(text: str, position: str, size: tuple[int, int], relative_height: float) -> Overlay:
    """The label for a frame of `size` (W, H), glyphs `relative_height` of the shorter side tall."""
    return text_overlay(text, size, relative_height, position)


def text_overlay(text: str, size: tuple[int, int], relative_height: float, position: str,
                 origin: tuple[int, int] = (0, 0)) -> Overlay:
    """White text on a dark translucent box, placed in an area of `size` (W, H) whose top-left corner is at
    `origin` of the frame: in a corner ("top-left", ..., "bottom-right") or centred at the bottom
    ("bottom-centre"). Glyphs are `relative_height` of the area's shorter side tall; a line too wide for the
    area breaks at " / ", and one still too wide is drawn smaller, down to MIN_SMALL_PX, and beyond that
    shortened with an ellipsis (a long caption in a small cell)."""
    width, height = size
    short = min(width, height)
    glyph_px = max(relative_height * short, MIN_SMALL_PX)
    lines = [text]
    font = _font_for_height(text, glyph_px)
    if _text_box(font, text)[0] > 0.9 * width and " / " in text:  # too wide for a narrow frame: two lines
        lines = text.split(" / ", 1)
    widest = max(_text_box(font, line)[0] for line in lines)
    room = 0.9 * width
    if widest > room and glyph_px > MIN_SMALL_PX:
        glyph_px = max(glyph_px * room / widest, MIN_SMALL_PX)
        font = _font_for_height(text, glyph_px)
    lines = [_shortened(font, line, room) for line in lines]
    extents = [_line_extent(font, line) for line in lines]
    pad = max(2, round(0.3 * glyph_px))
    line_gap = round(0.25 * glyph_px)
    box_w = max(right - left for left, _, right, _ in extents) + 2 * pad
    box_h = sum(bottom - top for _, top, _, bottom in extents) + line_gap * (len(lines) - 1) + 2 * pad
    box_w, box_h = min(box_w, width), min(box_h, height)

    image = Image.new("LA", (box_w, box_h), (0, round(255 * BOX_OPACITY)))
    draw = ImageDraw.Draw(image)
    y = pad
    for line, (left, top, _, bottom) in zip(lines, extents, strict=True):
        draw.text((pad - left, y - top), line, font=font, fill=(255, 255))
        y += bottom - top + line_gap
    layers = np.asarray(image, np.float32) / 255.0
    alpha = np.repeat(layers[..., 1:2], 3, axis=2)
    colour = np.round(layers[..., :1] * alpha * 255.0 * 256.0).astype(np.uint16)
    keep = np.round((1.0 - alpha) * 256.0).astype(np.uint16)

    margin = round(MARGIN * short)
    if position.endswith("centre"):
        x = (width - box_w) // 2
    else:
        x = margin if position.endswith("left") else width - box_w - margin
    y0 = margin if position.startswith("top") else height - box_h - margin
    return Overlay(colour, keep, origin[0] + max(0, x), origin[1] + max(0, y0))


def _font_for_height(text: str, glyph_px: float) -> ImageFont.FreeTypeFont:
    """The font (`font_for`) at the size whose CJK glyphs (or the whole line, whichever is shorter) are
    `glyph_px` tall."""
    path = str(font_for(text))
    probe = ImageFont.truetype(path, 100)
    # Measured on the CJK glyphs, or on "Ag" for Latin text, so that captions of different words match.
    sample = "".join(ch for ch in text if ord(ch) > 0x2E80) or "Ag"
    _, top, _, bottom = probe.getbbox(sample)
    size = math.ceil(glyph_px * 100 / max(1, bottom - top))
    return ImageFont.truetype(path, size)


def _shortened(font: ImageFont.FreeTypeFont, line: str, room: float) -> str:
    """The line, or as much of it as fits in `room` px followed by an ellipsis (at least its first character).
    The length is found by bisection: a caption of 20,000 characters, shortened one at a time, took minutes."""
    if _text_box(font, line)[0] <= room:
        return line
    fits, too_long = 1, len(line)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if _text_box(font, line[:middle].rstrip() + "…")[0] <= room:
            fits = middle
        else:
            too_long = middle
    return line[:fits].rstrip() + "…"


def _line_extent(font: ImageFont.FreeTypeFont, line: str) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom, from the drawing point) that a line takes: its ink across, and down
    from the top of a capital to the bottom of a descender at least, so that captions with and without
    descenders ("tiny", "astro") stand on the same baseline in boxes of one height."""
    left, top, right, bottom = font.getbbox(line)
    _, reference_top, _, reference_bottom = font.getbbox("Ag")
    return left, min(top, reference_top), right, max(bottom, reference_bottom)


def _text_box(font: ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom - top


class FrameLabeler:
    """Labels the frames of one output: conspicuous for the first 2 s, small after."""

    def __init__(self, settings: LabelSettings, size: tuple[int, int], fps: float | None) -> None:
        self.settings = settings
        self._large = render_overlay(settings.text, settings.position, size, LARGE_HEIGHT)
        self._small = render_overlay(settings.text, settings.position, size, SMALL_HEIGHT)
        self._large_frames = math.inf if fps is None else math.ceil(CONSPICUOUS_SECONDS * fps)

    def apply(self, frame: np.ndarray, index: int) -> np.ndarray:
        """Label frame number `index` in place (nothing when the label is off); returns it."""
        if not self.settings.enabled:
            return frame
        overlay = self._large if index < self._large_frames else self._small
        return overlay.apply(frame)


def find_label(frame: np.ndarray, text: str = DEFAULT_TEXT) -> dict[str, object]:
    """Look for the label (large or small, any corner) in an RGB frame: {"found", "position", "score"}."""
    gray = _soften(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    height, width = gray.shape
    best: dict[str, object] = {"found": False, "position": None, "score": 0.0}
    for relative_height in (LARGE_HEIGHT, SMALL_HEIGHT):
        for scale in _ORIGINAL_SCALES:
            for position in POSITIONS:
                template = _template(text, position, (width, height), scale, relative_height)
                if template is None:
                    continue
                score = _match(gray, template, position)
                if score > float(best["score"]):  # type: ignore[arg-type]
                    best = {"found": score >= MATCH_THRESHOLD, "position": position, "score": round(score, 3)}
    return best


def _template(text: str, position: str, size: tuple[int, int], scale: float,
              relative_height: float) -> np.ndarray | None:
    """The label as it looks in a frame of `size` that was made at `scale` times that size and resized."""
    original = (max(16, round(size[0] * scale)), max(16, round(size[1] * scale)))
    overlay = render_overlay(text, position, original, relative_height)
    # The label over mid grey: what matters is the text's shape inside its box.
    template = ((128 * overlay.keep[..., 0] + overlay.colour[..., 0]) >> 8).astype(np.uint8)
    if scale != 1.0:
        shape = (max(1, round(template.shape[1] / scale)), max(1, round(template.shape[0] / scale)))
        template = cv2.resize(template, shape, interpolation=cv2.INTER_AREA)
    if template.shape[0] < 8 or template.shape[1] < 8:
        return None
    return _soften(template)


def _soften(gray: np.ndarray) -> np.ndarray:
    """Blur away rasterisation details (hinting, antialiasing, resampling) that differ between a label drawn
    at one size and one drawn larger and scaled down."""
    return cv2.GaussianBlur(gray, (0, 0), 0.6)


def _match(gray: np.ndarray, template: np.ndarray, position: str) -> float:
    """Best normalised correlation of `template` inside the corner of `gray` that `position` names."""
    height, width = gray.shape
    t_h, t_w = template.shape
    # Search a corner region a little larger than the label's own margin box, so crops and rescaling that
    # move the label by a few percent still find it.
    region_h = min(height, t_h + round(0.2 * height))
    region_w = min(width, t_w + round(0.2 * width))
    y0 = 0 if position.startswith("top") else height - region_h
    x0 = 0 if position.endswith("left") else width - region_w
    region = gray[y0:y0 + region_h, x0:x0 + region_w]
    if region.shape[0] < t_h or region.shape[1] < t_w:
        return 0.0
    return float(cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED).max())
