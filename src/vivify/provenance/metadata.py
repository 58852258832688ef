"""The implicit label of GB 45438-2025 (Annex E): an `AIGC` JSON object in the file's metadata.

    {"AIGC": {"Label": "1", "ContentProducer": ..., "ProduceID": ..., "ReservedCode1": ...,
              "ContentPropagator": ..., "PropagateID": ..., "ReservedCode2": ...}}

Where it goes:

* MP4/MOV: the `AIGC` key in moov/udta/meta (an mdta key; FFmpeg writes such keys only with the
  `use_metadata_tags` movflag). The finished encode is remuxed once with the key (stream copy).
* WebM: a Matroska tag `AIGC`. GIF: a comment extension `AIGC=...` (GIF has no metadata standard).
* PNG: XMP in an iTXt chunk; JPEG: XMP in APP1 — the property `TC260:AIGC` in the namespace
  http://www.tc260.org.cn/ns/AIGC/1.0/, its value the JSON text.

ReservedCode1 binds the label to the content: HMAC-SHA256 keyed with the ProduceID over a digest of the
encoded media (the compressed packets of every stream for video, the image data for PNG and JPEG), so a
label copied onto another file, or a file whose media was replaced, no longer matches. The key is public
(anyone can check the binding); forging a consistent label is what the signed C2PA manifest prevents. The
digest leaves out everything a metadata write may change (container boxes, XMP, C2PA segments), so it is
the same before and after the label and the manifest are added.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import quoteattr

import av
import av.error

from vivify.errors import VivifyError

AIGC_KEY = "AIGC"
XMP_NAMESPACE = "http://www.tc260.org.cn/ns/AIGC/1.0/"
PRODUCER = "vivify"
FIELDS = ("Label", "ContentProducer", "ProduceID", "ReservedCode1", "ContentPropagator", "PropagateID",
          "ReservedCode2")
# Annex E: values are printable ASCII without spaces, quotes or backslashes.
_VALUE = re.compile(r"[!#-\[\]-~]+")
_XMP_ATTRIBUTE = re.compile(r"""TC260:AIGC\s*=\s*(["'])(.*?)\1""", re.S)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_XMP_KEY = "XML:com.adobe.xmp"
_CHUNK = 1 << 20


def aigc_label(content_id: str, digest: bytes, producer: str = PRODUCER) -> dict[str, dict[str, str]]:
    """The Annex E object for a first write: the propagator fields equal the producer fields."""
    code = binding_code(content_id, digest)
    fields = {"Label": "1", "ContentProducer": producer, "ProduceID": content_id, "ReservedCode1": code,
              "ContentPropagator": producer, "PropagateID": content_id, "ReservedCode2": code}
    for name, value in fields.items():
        if not _VALUE.fullmatch(value):
            raise ValueError(f"AIGC {name} must be printable ASCII without spaces, quotes or backslashes: {value!r}")
    return {AIGC_KEY: fields}


def binding_code(content_id: str, digest: bytes) -> str:
    """ReservedCode1: HMAC-SHA256(key=ProduceID, message=media digest), 32 hex digits."""
    return hmac.new(content_id.encode("ascii"), digest, hashlib.sha256).hexdigest()[:32]


def label_text(label: dict[str, dict[str, str]]) -> str:
    return json.dumps(label, ensure_ascii=True, separators=(",", ":"))


def parse_label(text: str) -> dict[str, str] | None:
    """The inner AIGC fields of a label's JSON text; None when it is not an AIGC object."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    fields = value.get(AIGC_KEY) if isinstance(value, dict) else None
    if not isinstance(fields, dict):
        return None
    return {str(k): str(v) for k, v in fields.items()}


def matches_content(fields: dict[str, str], digest: bytes | None) -> bool:
    """True when the label is complete and its ReservedCode1 binds its ProduceID to this media."""
    if digest is None or any(not _VALUE.fullmatch(fields.get(name, "")) for name in FIELDS):
        return False
    return hmac.compare_digest(fields["ReservedCode1"], binding_code(fields["ProduceID"], digest))


# -- digests of the media ----------------------------------------------------------------------------------


def media_digest(path: Path, kind: str) -> bytes:
    """The digest ReservedCode1 is computed over. `kind` is "video", "gif", "png" or "jpeg"."""
    if kind == "png":
        return _png_digest(path)
    if kind == "jpeg":
        return _jpeg_digest(path)
    if kind == "gif":
        return _pixel_digest(path)
    return _packet_digest(path)


def _packet_digest(path: Path) -> bytes:
    """SHA-256 over each stream's packets in order, streams combined by index: a remux keeps each stream's
    packets but may interleave the streams differently."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            hashes = [hashlib.sha256() for _ in container.streams]
            for packet in container.demux():
                if packet.size:
                    hashes[packet.stream.index].update(bytes(packet))
    except (av.error.FFmpegError, OSError) as error:
        raise VivifyError(f"{path.name}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    return hashlib.sha256(b"".join(h.digest() for h in hashes)).digest()


def _pixel_digest(path: Path) -> bytes:
    """SHA-256 over the decoded frames: GIF's demuxer counts extension blocks, where the label lives, as part
    of the first frame's packet."""
    digest = hashlib.sha256()
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            for frame in container.decode(video=0):
                digest.update(frame.to_ndarray(format="rgb24").tobytes())
    except (av.error.FFmpegError, OSError) as error:
        raise VivifyError(f"{path.name}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    return digest.digest()


def _png_chunks(file: BinaryIO, name: str) -> Iterator[tuple[bytes, bytes]]:
    if file.read(8) != _PNG_SIGNATURE:
        raise VivifyError(f"{name}: not a PNG file")
    while True:
        head = file.read(8)
        if len(head) < 8:
            raise VivifyError(f"{name}: truncated PNG file")
        length, kind = struct.unpack(">I4s", head)
        data = file.read(length)
        if len(data) < length or len(file.read(4)) < 4:
            raise VivifyError(f"{name}: truncated PNG file")
        yield kind, data
        if kind == b"IEND":
            return


def _png_digest(path: Path) -> bytes:
    """SHA-256 over the header and image data chunks (IHDR, PLTE, IDAT), not text, XMP or C2PA chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for kind, data in _png_chunks(file, path.name):
            if kind in (b"IHDR", b"PLTE", b"IDAT"):
                digest.update(kind + data)
    return digest.digest()


def _jpeg_segments(file: BinaryIO, name: str) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) of each segment up to the first scan, then (0xDA, the rest of the file)."""
    if file.read(2) != b"\xff\xd8":
        raise VivifyError(f"{name}: not a JPEG file")
    while True:
        head = file.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            raise VivifyError(f"{name}: truncated or damaged JPEG file")
        marker, length = head[1], struct.unpack(">H", head[2:])[0]
        payload = file.read(length - 2)
        if len(payload) < length - 2:
            raise VivifyError(f"{name}: truncated JPEG file")
        if marker == 0xDA:
            yield marker, payload + file.read()
            return
        yield marker, payload


def _jpeg_digest(path: Path) -> bytes:
    """SHA-256 over every segment but APP0-APP15 and comments (XMP, EXIF and C2PA live there)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for marker, payload in _jpeg_segments(file, path.name):
            if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
                digest.update(bytes([marker]) + payload)
    return digest.digest()


# -- writing -----------------------------------------------------------------------------------------------


def xmp_packet(label: dict[str, dict[str, str]]) -> bytes:
    """An XMP packet holding the label as the TC260:AIGC property."""
    value = quoteattr(label_text(label))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:TC260="{XMP_NAMESPACE}" TC260:AIGC={value}/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def png_xmp_chunk(label: dict[str, dict[str, str]]) -> tuple[str, str]:
    """(keyword, text) of the iTXt chunk that carries XMP in PNG."""
    return _PNG_XMP_KEY, xmp_packet(label).decode("utf-8")


def write_video_label(source: Path, dest: Path, muxer: str, label: dict[str, dict[str, str]]) -> None:
    """Remux `source` into `dest` (stream copy) with the label in the container's metadata."""
    options = {"movflags": "+faststart+use_metadata_tags"} if muxer in ("mp4", "mov") else {}
    with av.open(str(source), metadata_errors="ignore") as inp, \
            av.open(str(dest), "w", format=muxer, options=options) as out:
        out.metadata[AIGC_KEY] = label_text(label)
        streams = {}
        for stream in inp.streams:
            streams[stream.index] = out.add_stream_from_template(stream)
        for packet in inp.demux():
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def write_gif_label(path: Path, label: dict[str, dict[str, str]]) -> None:
    """Insert a GIF89a comment extension `AIGC=...` after the header and global colour table.

    FFmpeg's GIF muxer writes no metadata; a comment block is GIF's place for text (Pillow reads it as
    `info["comment"]`). The file is rewritten once, streaming.
    """
    data = f"{AIGC_KEY}={label_text(label)}".encode()
    blocks = b"".join(bytes([len(chunk)]) + chunk for chunk in (data[i:i + 255] for i in range(0, len(data), 255)))
    rewritten = path.with_name(path.name + ".aigc")
    with open(path, "rb") as src:
        head = src.read(13)  # "GIF89a" + logical screen descriptor
        if len(head) < 13 or not head.startswith(b"GIF8"):
            raise VivifyError(f"{path.name}: not a GIF file")
        packed = head[10]
        table = 3 * (2 ** ((packed & 0x07) + 1)) if packed & 0x80 else 0
        head += src.read(table)
        with open(rewritten, "wb") as dst:
            dst.write(head)
            dst.write(b"\x21\xfe" + blocks + b"\x00")
            shutil.copyfileobj(src, dst, _CHUNK)
    os.replace(rewritten, path)


def png_with_label(png: bytes, label_for: Callable[[bytes], dict[str, dict[str, str]]]) -> bytes:
    """PNG bytes with an XMP iTXt chunk right after IHDR; `label_for(digest)` makes the label."""
    digest = hashlib.sha256()
    for kind, data in _png_chunks(io.BytesIO(png), "frame"):
        if kind in (b"IHDR", b"PLTE", b"IDAT"):
            digest.update(kind + data)
    keyword, text = png_xmp_chunk(label_for(digest.digest()))
    body = b"iTXt" + keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    end_of_ihdr = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


# -- reading -----------------------------------------------------------------------------------------------


def read_label(path: Path, kind: str) -> dict[str, str] | None:
    """The AIGC fields stored in the file, or None. `kind` as for `media_digest`, or "gif" or "webp"."""
    if kind == "png":
        with open(path, "rb") as file:
            for chunk, data in _png_chunks(file, path.name):
                if chunk == b"iTXt" and data.startswith(_PNG_XMP_KEY.encode() + b"\0"):
                    return _label_from_xmp(_itxt_text(data))
        return None
    if kind == "jpeg":
        with open(path, "rb") as file:
            for marker, payload in _jpeg_segments(file, path.name):
                if marker == 0xE1 and payload.startswith(b"http://ns.adobe.com/xap/1.0/\0"):
                    return _label_from_xmp(payload.split(b"\0", 1)[1].decode("utf-8", "replace"))
        return None
    if kind == "gif":
        return _gif_label(path)
    if kind == "webp":  # vivify writes no WebP stills: a WebP is a copy made elsewhere, its metadata not kept
        return None
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            metadata = {key.upper(): value for key, value in container.metadata.items()}
    except (av.error.FFmpegError, OSError) as error:
        raise VivifyError(f"{path.name}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    text = metadata.get(AIGC_KEY)
    return None if text is None else parse_label(text)


def _itxt_text(data: bytes) -> str:
    """The text of an iTXt chunk: keyword, compression flag and method, language, translated keyword."""
    _, rest = data.split(b"\0", 1)
    compressed, rest = rest[0], rest[2:]
    _, _, text = rest.split(b"\0", 2)
    return (zlib.decompress(text) if compressed else text).decode("utf-8", "replace")


def _label_from_xmp(xmp: str) -> dict[str, str] | None:
    from xml.sax.saxutils import unescape

    match = _XMP_ATTRIBUTE.search(xmp)
    if match is None:
        return None
    return parse_label(unescape(match[2], {"&quot;": '"', "&apos;": "'"}))


def _gif_label(path: Path) -> dict[str, str] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            comment = image.info.get("comment", b"")
    except (OSError, UnidentifiedImageError) as error:
        raise VivifyError(f"{path.name}: cannot read ({error})") from None
    text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else str(comment)
    for line in text.splitlines():
        if line.startswith(f"{AIGC_KEY}="):
            return parse_label(line[len(AIGC_KEY) + 1:])
    return None
