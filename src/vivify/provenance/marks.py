"""The provenance stage that every writer goes through: the four marks of one output, and its log record.

    marks = Marks.create(ingredients=[portrait, driving], command=sys.argv)   # before rendering: a bad
    with open_writer(out, fps, size, marks=marks) as writer:                 # certificate fails here
        ...

* per frame (on the writer's thread): the visible label, then the invisible watermark carrying the
  content id;
* per finished file: the GB 45438 metadata label bound to the encoded media (a stream-copy remux for
  video), then the C2PA manifest, signed last so that nothing rewrites the file after it;
* before the output is published: a record in the audit log.

One content id (16 hex digits) per output: the watermark payload, the GB 45438 ProduceID and the id in
the C2PA manifest. A frame folder is one output: every PNG carries the same id and its own manifest.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vivify.errors import VivifyError
from vivify.provenance import audit, metadata
from vivify.provenance.identity import SigningIdentity, data_dir, load_identity
from vivify.provenance.label import FrameLabeler, LabelSettings
from vivify.provenance.manifest import mime_for, sign_file
from vivify.provenance.watermark import WatermarkEmbedder

# The writer's output kinds -> the digest kind of vivify.provenance.metadata.
_DIGEST_KIND = {"h264": "video", "vp9": "video", "gif": "gif", "png": "png", "jpeg": "jpeg"}


def new_content_id() -> str:
    return secrets.token_hex(8)


@dataclass
class FrameMarker:
    """Label and watermark for the frames of one output; `seconds` is the time spent marking them."""

    labeler: FrameLabeler
    watermark: WatermarkEmbedder
    seconds: float = 0.0

    def apply(self, frame: np.ndarray, index: int) -> np.ndarray:
        """Mark frame number `index` (RGB uint8, modified in place); returns the marked frame."""
        start = time.perf_counter()
        marked = self.watermark.apply(self.labeler.apply(frame, index))
        self.seconds += time.perf_counter() - start
        return marked


@dataclass
class Marks:
    """What the marks of one output need. Make it with `Marks.create` before rendering starts, one per output:
    its content id names one generation, so a writer refuses marks that marked another output already."""

    identity: SigningIdentity
    label: LabelSettings = field(default_factory=LabelSettings)
    ingredients: tuple[Path, ...] = ()
    command: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    content_id: str = field(default_factory=new_content_id)
    # Time spent on the marks (the signing identity, frames, files): the audit log records it, `vivify bench`
    # reports it.
    _markers: list[FrameMarker] = field(default_factory=list, init=False, repr=False)
    _file_seconds: float = field(default=0.0, init=False, repr=False)
    _claimed: bool = field(default=False, init=False, repr=False)

    @property
    def seconds(self) -> float:
        return sum(marker.seconds for marker in self._markers) + self._file_seconds

    @classmethod
    def create(cls, *, label: LabelSettings | None = None, sign_cert: str | Path | None = None,
               sign_key: str | Path | None = None, ingredients: Sequence[str | Path] = (),
               command: Sequence[str] = (), options: dict[str, Any] | None = None) -> Marks:
        """Load (or, first time, create) the signing identity now, so an unusable certificate is reported
        before any rendering."""
        start = time.perf_counter()
        marks = cls(identity=load_identity(sign_cert, sign_key), label=label or LabelSettings(),
                    ingredients=tuple(Path(p) for p in ingredients), command=tuple(command),
                    options=dict(options or {}))
        marks._file_seconds = time.perf_counter() - start
        return marks

    def claim(self) -> None:
        """Take these marks for the output being opened; ValueError where they marked one already (two files
        under one content id would be one generation to the watermark, the manifests and the audit log)."""
        if self._claimed:
            raise ValueError(f"these marks (content id {self.content_id}) are another output's already: "
                             "make one Marks per output (Marks.create)")
        self._claimed = True

    def naming_inputs(self, inputs: Sequence[str | Path]) -> Marks:
        """These marks, with `inputs` as their ingredients where the caller named none (a caller's marks that set
        only the label or the signer)."""
        if not self.ingredients:
            self.ingredients = tuple(Path(p) for p in inputs)
        return self

    def frame_marker(self, size: tuple[int, int], fps: Fraction | float | None) -> FrameMarker:
        start = time.perf_counter()
        marker = FrameMarker(FrameLabeler(self.label, size, None if fps is None else float(fps)),
                             WatermarkEmbedder(self.content_id, size))
        marker.seconds = time.perf_counter() - start
        self._markers.append(marker)
        return marker

    # -- files ---------------------------------------------------------------------------------------------

    def seal_video(self, temp: Path, kind: str, muxer: str, name: str) -> None:
        """Add the metadata label and the signed manifest to the finished file `temp`, in place.
        `name` is the output's real name (its extension picks the manifest's format)."""
        start = time.perf_counter()
        digest = metadata.media_digest(temp, _DIGEST_KIND[kind])
        label = metadata.aigc_label(self.content_id, digest)
        if kind == "gif":
            metadata.write_gif_label(temp, label)
        else:
            labelled = temp.with_name(temp.name + ".aigc")
            try:
                metadata.write_video_label(temp, labelled, muxer, label)
                os.replace(labelled, temp)
            finally:
                _remove(labelled)
        self._sign(temp, name)
        self._file_seconds += time.perf_counter() - start

    def write_png(self, frame: np.ndarray, path: Path, name: str) -> None:
        """Write `frame` (RGB uint8, already labelled and watermarked) as a new PNG file `path` with the
        metadata label and the signed manifest. `name` is the output's real name."""
        buffer = io.BytesIO()
        # zlib level 1: several times faster than the default for files only a few percent larger.
        Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
        start = time.perf_counter()
        png = metadata.png_with_label(buffer.getvalue(), lambda digest: metadata.aigc_label(self.content_id, digest))
        with open(path, "wb") as file:
            file.write(png)
        self._sign(path, name)
        self._file_seconds += time.perf_counter() - start

    def _sign(self, path: Path, name: str) -> None:
        mime = mime_for(Path(name))
        if mime is None:
            return  # a format C2PA cannot carry (WebM): the other three marks still hold
        signed = path.with_name(path.name + ".c2pa")
        try:
            sign_file(path, signed, mime=mime, identity=self.identity, content_id=self.content_id,
                      title=Path(name).name, ingredients=self.ingredients,
                      extra={"visible_label": self.label.as_dict()})
            os.replace(signed, path)
        finally:
            _remove(signed)

    # -- the log -------------------------------------------------------------------------------------------

    def log(self, output: str | Path, frames: int | None) -> None:
        """Append this generation to the audit log (before the output is published); a live stream has no
        file (`output` names it) and its length is not known beforehand (`frames` None)."""
        inputs = []
        for ingredient in self.ingredients:
            try:
                inputs.append({"path": str(ingredient), "sha256": audit.file_sha256(ingredient)})
            except OSError as error:
                raise VivifyError(f"{ingredient}: cannot read for the audit log ({error.strerror})") from None
        audit.append_record(data_dir(), {
            "content_id": self.content_id, "output": str(output), "frames": frames, "inputs": inputs,
            "command": list(self.command), "options": self.options, "signer": self.identity.subject,
            "label": self.label.as_dict(), "marks_seconds": round(self.seconds, 3),
        })


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
