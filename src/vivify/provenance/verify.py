"""`vivify verify FILE`: which AI-generation marks a video or image carries.

Each of the four marks is checked on its own, so a file that lost some (metadata stripped by a platform,
re-encoded, cropped) still reports the others:

* visible label: the label's shape in the corners of the first frame and of a frame after 2 s;
* metadata: the GB 45438 `AIGC` label, and whether its ReservedCode1 matches this file's media (a label
  copied from another file or altered does not);
* C2PA: the manifest and c2pa's validation of it;
* watermark: the payload, read from up to `WATERMARK_FRAMES` frames spread over the video.

A file carries a mark when the mark is found, valid or not: every mark claims AI generation, and the
report says which ones also check out. `content_id` is the id the valid marks agree on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vivify.errors import VideoCutShort, VivifyError
from vivify.io.image import load_portrait
from vivify.provenance import metadata
from vivify.provenance.label import CONSPICUOUS_SECONDS, DEFAULT_TEXT, find_label
from vivify.provenance.manifest import content_mime, read_manifest
from vivify.provenance.watermark import WatermarkDetector

WATERMARK_FRAMES = 60
_VALID_STATES = ("Valid", "Trusted")
_IMAGE_KINDS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/gif": "gif"}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def verify(path: str | Path) -> dict[str, Any]:
    """The report `vivify verify --json` prints; raises VivifyError for a missing, corrupt or non-media file."""
    path = Path(path)
    if not path.exists():
        raise VivifyError(f"{path}: file not found")
    if path.is_dir():
        # A PNG-frame output is a folder: each of its frames carries the marks, and is checked by name.
        raise VivifyError(f"{path}: is a folder, not a video or image (a folder of frames: name them, {path}/*.png)")
    kind, mime = _sniff(path)

    aigc = metadata.read_label(path, kind)
    meta: dict[str, Any] = {"found": aigc is not None, "aigc": aigc, "matches_content": False}
    if aigc is not None:
        meta["matches_content"] = metadata.matches_content(aigc, metadata.media_digest(path, kind))

    # Other containers (WebM, Matroska, AVI) cannot carry a C2PA manifest that c2pa-python reads.
    c2pa = (read_manifest(path, mime) if mime is not None
            else {"found": False, "validation_state": None, "supported": False})

    label_text = ((c2pa.get("extra") or {}).get("visible_label") or {}).get("text") or DEFAULT_TEXT
    try:
        visible, watermark = _scan_frames(path, kind, label_text)
    except VivifyError as error:
        if not (meta["found"] or c2pa.get("found")):
            raise
        # A file cut before its first frame can still hold its metadata and manifest (at its start): they
        # are reported, the marks in the pixels as unread.
        unread = str(error).removeprefix(f"{path}: ")
        visible = {"found": False, "position": None, "score": 0.0, "text": label_text, "unread": unread}
        watermark = {"found": False, "payload": None, "confidence": 0.0, "unread": unread}

    content_id = None
    if c2pa.get("found") and c2pa.get("validation_state") in _VALID_STATES:
        content_id = c2pa.get("content_id")
    if content_id is None and meta["matches_content"]:
        content_id = aigc["ProduceID"]  # type: ignore[index]
    if content_id is None and watermark["found"]:
        content_id = watermark["payload"]
    found = [visible["found"], meta["found"] and aigc.get("Label") == "1", c2pa.get("found"),  # type: ignore[union-attr]
             watermark["found"]]
    return {"file": str(path), "ai_generated": any(bool(f) for f in found), "content_id": content_id,
            "visible_label": visible, "metadata": meta, "c2pa": c2pa, "watermark": watermark}


def _sniff(path: Path) -> tuple[str, str | None]:
    """("png", "jpeg", "webp", "gif" or "video"; the format c2pa is to read it as, None for a video container
    it cannot read) from the file's first bytes (never its name)."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as error:
        raise VivifyError(f"{path}: cannot read ({error.strerror})") from None
    if not head:
        raise VivifyError(f"{path}: empty file")
    mime = content_mime(head)
    if mime in _IMAGE_KINDS:  # WebP: a still re-shared as WebP, as sites convert them
        return _IMAGE_KINDS[mime], mime
    if head.startswith((b"BM", b"II*\0", b"MM\0*")):  # pictures vivify never writes: FFmpeg would call them stills
        kind = "BMP" if head.startswith(b"BM") else "TIFF"
        raise VivifyError(f"{path}: a {kind} image: verify reads videos, and PNG, JPEG, WebP and GIF images")
    if path.suffix.lower() in _IMAGE_SUFFIXES and not _video_inside(path):
        raise VivifyError(f"{path}: not a readable image (its content is not PNG, JPEG, WebP or GIF)")
    return "video", mime if mime in ("video/mp4", "video/quicktime") else None


def _video_inside(path: Path) -> bool:
    """Whether FFmpeg finds a video in a file named like an image by its content (a video renamed .jpg), not
    only by the name (which makes it try any file as a still image)."""
    import av

    from vivify.io.video import is_still_image_format

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return not is_still_image_format(container.format.name) and bool(container.streams.video)
    except (av.error.FFmpegError, OSError, ValueError):
        return False


def _scan_frames(path: Path, kind: str, label_text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The visible label and the watermark, from one pass over the frames."""
    detector = WatermarkDetector()
    label: dict[str, Any] = {"found": False, "position": None, "score": 0.0, "text": label_text}
    for frame, label_check in _frames(path, kind):
        detector.add(frame)
        if label_check and not label["found"]:
            label.update(find_label(frame, label_text))
    result = detector.result()
    watermark = {"found": result.found, "payload": result.payload, "confidence": round(float(result.confidence), 4)}
    return label, watermark


def _frames(path: Path, kind: str) -> Iterator[tuple[np.ndarray, bool]]:
    """(frame, whether to look for the label in it): a still's only frame, or up to WATERMARK_FRAMES frames
    spread over a video, the label looked for in the first and in the first after the conspicuous part."""
    if kind in ("png", "jpeg", "webp"):
        # As a viewer shows it, within the portrait's pixel limit (a decompression bomb is refused, not opened).
        yield load_portrait(path, any_size=True), True
        return
    from vivify.io.video import open_video

    with open_video(path) as video:
        total = video.frame_count or WATERMARK_FRAMES
        stride = max(1, total // WATERMARK_FRAMES)
        small_label_at = int(np.ceil(CONSPICUOUS_SECONDS * float(video.fps)))
        try:
            for index, frame in enumerate(video.frames()):
                check = index in (0, small_label_at)
                if check or index % stride == 0:
                    yield frame, check
        except VideoCutShort:  # a download cut short: its marks are read in the frames it holds
            return


def summary(report: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = [f"{report['file']}: " + ("AI-generated" if report["ai_generated"] else "no AI-generation mark found")
             + (f" (content id {report['content_id']})" if report["content_id"] else "")]
    visible = report["visible_label"]
    unread = f"not read: {visible['unread']}" if "unread" in visible else "not found"
    lines.append("  visible label: " + (f"found ({visible['position']})" if visible["found"] else unread))
    meta = report["metadata"]
    if meta["found"]:
        match = "matches this file" if meta["matches_content"] else "DOES NOT match this file (copied or altered)"
        lines.append(f"  metadata (GB 45438): ProduceID {meta['aigc'].get('ProduceID')}, {match}")
    else:
        lines.append("  metadata (GB 45438): not found")
    c2pa = report["c2pa"]
    if c2pa.get("found"):
        if c2pa.get("errors"):  # Invalid: what failed (the content changed, a signature broken), not its trust
            why = f" ({', '.join(c2pa['errors'])})"
        else:
            why = "" if c2pa.get("trusted") else f" (issuer {c2pa.get('issuer')} is not in a trust list)"
        lines.append(f"  C2PA: {c2pa.get('validation_state')}, signed by {c2pa.get('signer')}{why}")
    elif c2pa.get("supported") is False:
        lines.append("  C2PA: not found (this format cannot carry a C2PA manifest)")
    else:
        lines.append("  C2PA: not found")
    mark = report["watermark"]
    lines.append("  watermark: " + (f"payload {mark['payload']}, confidence {mark['confidence']:.2f}"
                                    if mark["found"] else unread))
    return "\n".join(lines)
