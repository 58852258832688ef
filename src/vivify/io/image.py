"""Loading the still portrait that vivify animates.

The portrait comes from the user, so it is treated as untrusted input: its pixel count is checked
from the header before any pixel data is decoded (decompression bombs), truncated files are errors
rather than half-grey pictures, and every failure is a one-line `VivifyError` naming the file.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vivify.errors import PortraitTooLarge, VivifyError

log = logging.getLogger(__name__)

MAX_PORTRAIT_MEGAPIXELS = 50
"""Largest portrait accepted, in millions of pixels (a 50 MP phone photo is ~8700×5800)."""

# Only the formats vivify documents; restricting Pillow's format probing also keeps the
# rarer (and historically less robust) image parsers away from untrusted files.
_FORMATS = ("JPEG", "PNG", "WEBP")
# Other image formats that a refused file is recognised as, to say so.
_NAMED_FORMATS = ("BMP", "GIF", "TIFF", "ICO", "PPM")
# A side of one pixel cannot even be cropped to an even output size, and holds no face: refused by name up front.
_MIN_SIDE = 2

# Transparent pixels are composited onto white, the background most viewers would show.
_BACKGROUND = (255, 255, 255)

# Pillow's own bomb check can fire inside Image.open(), before we see the size; its message
# carries the pixel count, e.g. "Image size (400000000 pixels) exceeds limit of ...".
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def load_portrait(path: str | Path, max_megapixels: float = MAX_PORTRAIT_MEGAPIXELS,
                  any_size: bool = False) -> np.ndarray:
    """Load a JPEG, PNG or WebP portrait as an upright RGB uint8 array of shape H×W×3.

    EXIF orientation is applied; greyscale, palette, 16-bit and CMYK images are converted to RGB;
    transparency is composited onto white. Only the first frame of an animated WebP/PNG is used.

    Raises VivifyError (message starts with `path` as given) when the file is missing, is not a
    readable JPEG/PNG/WebP, is truncated or corrupt; PortraitTooLarge, a VivifyError, when it is over
    `max_megapixels` (at most MAX_PORTRAIT_MEGAPIXELS, the engine's own limit). An image too small to hold a
    face is refused too, unless `any_size` (a picture to look at, not to animate: `vivify verify`).
    """
    if not 0 < max_megapixels <= MAX_PORTRAIT_MEGAPIXELS:
        raise ValueError(f"max_megapixels must be above 0 and at most {MAX_PORTRAIT_MEGAPIXELS}")
    name = str(path)
    file = Path(path)
    if not file.exists():
        raise VivifyError(f"{name}: file not found")
    if file.is_dir():
        raise VivifyError(f"{name}: is a directory, not an image")

    try:
        with warnings.catch_warnings():
            # Our limit is lower than Pillow's warning threshold; don't print its warning too.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Image.open() only parses the header; pixels are decoded by load() below.
            image = Image.open(file, formats=_FORMATS)
        with image:
            _check_size(name, *image.size, max_megapixels, 1 if any_size else _MIN_SIDE)
            image.load()  # inside the try: truncation and decoder errors surface here
            rgb = _to_rgb(_upright(image))
    except VivifyError:
        raise
    except Image.DecompressionBombError as error:
        match = _BOMB_PIXELS.search(str(error))
        pixels = int(match.group(1)) if match else None
        raise PortraitTooLarge(_too_big_message(name, pixels, max_megapixels)) from None
    except UnidentifiedImageError:
        raise VivifyError(_unidentified_message(name, file)) from None
    except PermissionError as error:
        raise VivifyError(f"{name}: cannot read ({error.strerror})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        # Pillow reports truncation as OSError("image file is truncated ..."), bad chunks as
        # SyntaxError/ValueError; all mean the same thing to the user.
        raise VivifyError(f"{name}: not an image or corrupt ({_short_reason(error)})") from None

    return rgb


def _unidentified_message(name: str, file: Path) -> str:
    """Why a file is not read as a portrait: an image in a format that is not taken (named), or no image."""
    try:
        # Only the header is parsed, and only by common formats' parsers (see _FORMATS on untrusted files).
        with Image.open(file, formats=_NAMED_FORMATS) as image:
            kind = image.format
    except Exception:
        kind = None
    if kind:
        return f"{name}: {kind} images are not supported (use a JPEG, PNG or WebP file)"
    return f"{name}: not an image or corrupt (not a JPEG, PNG or WebP file)"


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block only costs the rotation, not the image."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        log.warning("%s: unreadable EXIF orientation, using the image as stored", image.filename)
        return image


def over_pixel_limit(width: int, height: int, max_megapixels: float = MAX_PORTRAIT_MEGAPIXELS) -> bool:
    """Whether a picture of this size has more than `max_megapixels` million pixels (portraits, and the outputs
    made from them, are held to the same limit)."""
    return width * height > max_megapixels * 1_000_000


def _check_size(name: str, width: int, height: int, max_megapixels: float, min_side: int) -> None:
    """Refuse images above the pixel limit, and images with a side under `min_side` (too small to hold a face),
    using only the size declared in the header."""
    if min(width, height) < min_side:
        raise VivifyError(f"{name}: image is {width}x{height} px, too small to hold a face")
    if over_pixel_limit(width, height, max_megapixels):
        raise PortraitTooLarge(_too_big_message(name, width * height, max_megapixels))


def _too_big_message(name: str, pixels: int | None, max_megapixels: float) -> str:
    size = f" {pixels / 1e6:.4g} megapixels," if pixels else ""  # 25.04, not 25.0, against a limit of 25
    return f"{name}: image is{size} over the {max_megapixels:g} megapixel limit"


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode that JPEG/PNG/WebP can produce to a contiguous RGB uint8 array."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale PNG: Pillow's convert("RGB") clips instead of scaling, so scale here.
        grey = np.asarray(image, dtype=np.uint32) // 257
        grey = np.clip(grey, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))

    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        image = Image.alpha_composite(background, rgba)

    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGBA-after-compositing
    return np.array(image, dtype=np.uint8)  # np.array copies: writable and C-contiguous


def _short_reason(error: BaseException) -> str:
    """First line of an exception message, trimmed so the whole error stays on one line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def fit_portrait(portrait: np.ndarray, size: tuple[int, int] | None = None,
                 max_side: int | None = None) -> np.ndarray:
    """The portrait at the output's size: `size` (W, H) exactly (scaled to cover, centre-cropped), or
    scaled down so its longer side is at most `max_side`; each side then rounded down to even (H.264)."""
    if size is not None and (len(size) != 2 or min(size) < 2):
        raise VivifyError(f"output size {size}: expected (width, height), each at least 2 px")
    if max_side is not None and max_side < 2:
        raise VivifyError(f"longest side {max_side}: expected at least 2 px")
    height, width = portrait.shape[:2]
    if size is not None:
        out_w, out_h = size
        if over_pixel_limit(out_w, out_h):
            raise VivifyError(f"output size {out_w}x{out_h} is over the {MAX_PORTRAIT_MEGAPIXELS} megapixel limit")
        scale = max(out_w / width, out_h / height)
        scaled = cv2.resize(portrait, (max(out_w, round(width * scale)), max(out_h, round(height * scale))),
                            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        x0 = (scaled.shape[1] - out_w) // 2
        y0 = (scaled.shape[0] - out_h) // 2
        portrait = scaled[y0:y0 + out_h, x0:x0 + out_w]
    elif max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        portrait = cv2.resize(portrait, (max(2, round(width * scale)), max(2, round(height * scale))),
                              interpolation=cv2.INTER_AREA)
    height, width = portrait.shape[:2]
    if width < 2 or height < 2:
        raise VivifyError(f"output size {width}x{height} is too small")
    return np.ascontiguousarray(portrait[: height - height % 2, : width - width % 2])
