"""C2PA manifests: sign a finished output with the official c2pa-python library, and read one back.

Design:

* Signed last. `sign_file` copies a finished file (after every remux) into a new file with the manifest
  embedded; nothing may rewrite the media after it, or its hash binding breaks. The format is always
  passed explicitly, because vivify signs hidden temp files whose names hide the extension.
* What it says. Without ingredients: one `c2pa.created` action, digitalSourceType trainedAlgorithmicMedia.
  With ingredients (vivify passes the portrait, then the driving video): the first is the parent
  (`parentOf`, `c2pa.opened`, as C2PA wants the first action to be "created" or "opened"), the others are
  inputs (`inputTo`) of a `c2pa.edited` action with digitalSourceType compositeWithTrainedAlgorithmicMedia.
  Ingredients are named by file name only (no folders: they would leak into every output). An ingredient in
  a format c2pa reads is added from its file, so a manifest it carries extends the provenance chain; c2pa
  only walks the container's boxes for that (measured: 0 ms for a 150 MB MP4 without a manifest, 0.3 s and
  memory about the file's size for one with a manifest, whose hash c2pa then checks). Other formats
  (WebM ...) are added by title and format only. Thumbnails are off: c2pa makes none for video, and for
  images they would add ~20-50 KB of JPEG per output plus a copy of the portrait.
* vivify's own assertion, `org.vivify.provenance` (C2PA reserves `c2pa.*`; others use a reverse-domain
  prefix): the content id (the watermark payload and GB 45438 ProduceID) and the caller's `extra` dict.
* Offline. No timestamp authority, no OCSP, no remote manifests, and c2pa's list of hosts it may contact is
  empty, so neither signing nor reading can touch the network. Without a timestamp the signing time is
  unattested: C2PA then checks the certificate against the time of validation.
* Reading. c2pa checks the signature, the certificate profile and the hash binding of the content; its
  validation state is "Invalid" if any of it fails, "Valid" if it holds, and "Trusted" if the signer also
  chains to a trust anchor. No trust list is built in, so the only anchor is this installation's local CA:
  its own outputs read "Trusted", anyone else's valid ones "Valid" with `trusted` False (c2pa's
  `signingCredential.untrusted`, reported there rather than in `errors`).
"""

from __future__ import annotations

import io
import json
import mimetypes
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import c2pa
from PIL import Image

from vivify.errors import VivifyError
from vivify.provenance.identity import SigningIdentity, local_trust_anchor

ASSERTION_LABEL = "org.vivify.provenance"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia")

# vivify's output extensions that c2pa-python 0.38.1 can sign and read. WebM (Matroska) is not among its
# formats at all.
_MIMES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".png": "image/png",
          ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}

_CONTENT_ID = re.compile(r"[0-9a-f]{16}")
_UNTRUSTED = "signingCredential.untrusted"
_OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
            "core": {"allowed_network_hosts": []}}
# c2pa keeps the signed output in memory up to this many MB before it spills to a temporary file. With its
# default (512) signing a 150 MB video peaked at twice the file's size in memory, with 8 at its size (c2pa
# still reads the media box whole to hash it), for 25% more time.
# verify_after_sign (c2pa's default, made explicit): trial_sign relies on c2pa validating what it signed.
_SIGN_SETTINGS = {"verify": {**_OFFLINE["verify"], "verify_after_sign": True},
                  "core": {**_OFFLINE["core"], "backing_store_memory_threshold_in_mb": 8},
                  "builder": {"thumbnail": {"enabled": False}}}
_SOFTWARE_AGENT = {"name": "vivify", "version": metadata.version("vivify")}


class UnsupportedFormatError(VivifyError):
    """The file's format cannot carry a C2PA manifest (for vivify's outputs: WebM)."""


def mime_for(path: Path) -> str | None:
    """The C2PA format of a vivify output, from its extension; None when C2PA cannot carry one."""
    return _MIMES.get(Path(path).suffix.lower())


def sign_file(source: Path, dest: Path, *, mime: str, identity: SigningIdentity, content_id: str, title: str,
              ingredients: Sequence[Path] = (), extra: dict[str, Any] | None = None) -> None:
    """Write `source` with a signed C2PA manifest embedded to the new file `dest` (`source` is not changed).

    `mime` is the format (see `mime_for`), `title` the output's name as the manifest shows it, `content_id`
    16 lowercase hex digits, `extra` a small JSON-able dict stored in vivify's assertion. `ingredients`: the
    portrait first, then the driving video (see the module docstring).

    Raises UnsupportedFormatError for a format C2PA cannot carry, VivifyError when a file cannot be read or
    written or c2pa refuses to sign; `dest` is removed on failure.
    """
    if mime not in c2pa.Builder.get_supported_mime_types():
        raise UnsupportedFormatError(f"{title}: C2PA manifests cannot be embedded in {mime} files")
    if not _CONTENT_ID.fullmatch(content_id):
        raise ValueError(f"content id must be 16 lowercase hex digits, got {content_id!r}")
    ingredients = [Path(p) for p in ingredients]
    definition = _definition(_text(title), content_id, extra, ingredients)
    try:
        with open(source, "rb") as src, open(dest, "w+b") as dst:
            _sign(identity, definition, ingredients, mime, src, dst)
    except OSError as error:
        Path(dest).unlink(missing_ok=True)
        raise VivifyError(f"{error.filename or source}: {error.strerror or error}") from None
    except c2pa.C2paError as error:
        Path(dest).unlink(missing_ok=True)
        raise VivifyError(f"{title}: C2PA signing failed ({_detail(error)})") from None


def trial_sign(identity: SigningIdentity) -> str | None:
    """Sign a 1×1 PNG in memory, so that c2pa's own checks of the certificate run before any real work.
    Returns None when c2pa signs with `identity`, else its reason for refusing."""
    image = io.BytesIO()
    Image.new("RGB", (1, 1)).save(image, format="PNG")
    image.seek(0)
    try:
        _sign(identity, _definition("vivify signing check", "0" * 16, None, []), [], "image/png", image,
              io.BytesIO())
    except c2pa.C2paError as error:
        return _detail(error)
    return None


def read_manifest(path: Path, mime: str | None = None) -> dict[str, Any]:
    """What the C2PA manifest of `path` says and whether it validates. `mime` defaults to the extension's
    format, else c2pa tells the format from the bytes.

    Returns {"found", "validation_state" ("Trusted", "Valid", "Invalid" or None), "trusted", "signer",
    "issuer" (certificate subject and issuer), "actions" (names), "digital_source_type", "ingredients"
    (titles), "content_id", "extra" (vivify's), "errors" (c2pa failure codes, untrusted signer aside)}:
    "found" False when the file has no manifest. Raises UnsupportedFormatError for a format C2PA cannot
    carry, VivifyError for a missing, unreadable or corrupt file.
    """
    path = Path(path)
    settings: dict[str, Any] = dict(_OFFLINE)
    anchor = local_trust_anchor()
    if anchor is not None:
        settings["trust"] = {"user_anchors": anchor.decode("ascii")}
    try:
        with open(path, "rb") as stream, c2pa.Context.from_dict(settings) as context:
            reader = c2pa.Reader.try_create(mime or mime_for(path), stream, None, context)
            if reader is None:
                return _report(found=False)
            with reader:
                store, crjson = json.loads(reader.json()), json.loads(reader.crjson())
    except FileNotFoundError:
        raise VivifyError(f"{path}: file not found") from None
    except OSError as error:
        raise VivifyError(f"{path}: cannot read ({error.strerror or error})") from None
    except c2pa.C2paError.NotSupported:
        raise UnsupportedFormatError(f"{path}: not a format that can carry a C2PA manifest") from None
    except c2pa.C2paError as error:
        raise VivifyError(f"{path}: cannot read its C2PA data ({_detail(error)})") from None
    return _summarise(store, crjson)


# -- signing --------------------------------------------------------------------------------------------------


def _definition(title: str, content_id: str, extra: dict[str, Any] | None,
                ingredients: Sequence[Path]) -> dict[str, Any]:
    if ingredients:
        ids = [_ingredient(i, path)["label"] for i, path in enumerate(ingredients)]
        edited: dict[str, Any] = {"action": "c2pa.edited", "softwareAgent": _SOFTWARE_AGENT,
                                  "digitalSourceType": COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA}
        if ids[1:]:
            edited["parameters"] = {"ingredientIds": ids[1:]}
        actions = [{"action": "c2pa.opened", "softwareAgent": _SOFTWARE_AGENT,
                    "parameters": {"ingredientIds": ids[:1]}}, edited]
    else:
        actions = [{"action": "c2pa.created", "softwareAgent": _SOFTWARE_AGENT,
                    "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA}]
    return {
        "title": title,
        "claim_generator_info": [_SOFTWARE_AGENT],
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": actions}},
            {"label": ASSERTION_LABEL, "data": {"content_id": content_id, "extra": extra}},
        ],
        # Formats c2pa cannot open are described by title and format alone; _sign adds the others from
        # their files.
        "ingredients": [{**_ingredient(i, path), "format": _ingredient_mime(path) or mimetypes.guess_type(path.name)[0]
                         or "application/octet-stream"} for i, path in enumerate(ingredients) if not _readable(path)],
    }


def _ingredient(index: int, path: Path) -> dict[str, str]:
    """The first ingredient is the parent; the label links it to its action."""
    return {"title": _text(path.name), "relationship": "parentOf" if index == 0 else "inputTo",
            "label": f"ingredient{index}"}


def _text(name: str) -> str:
    """A file name as a manifest can hold it: bytes of the name that are no character (a name made on a
    system in another encoding) become U+FFFD; the manifest is UTF-8 JSON."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _sign(identity: SigningIdentity, definition: dict[str, Any], ingredients: Sequence[Path], mime: str,
          source: Any, dest: Any) -> None:
    info = c2pa.C2paSignerInfo(identity.algorithm, identity.certificate_chain, identity.private_key, None)
    with c2pa.Context.from_dict(_SIGN_SETTINGS) as context, c2pa.Signer.from_info(info) as signer, \
            c2pa.Builder(definition, context=context) as builder:
        for i, path in enumerate(ingredients):
            if _readable(path):
                with open(path, "rb") as file:
                    builder.add_ingredient(_ingredient(i, path), _ingredient_mime(path), file)
        builder.sign(signer, mime, source, dest)


def _readable(path: Path) -> bool:
    return _ingredient_mime(path) in c2pa.Builder.get_supported_mime_types()


def _ingredient_mime(path: Path) -> str | None:
    """An input's format, from its content: c2pa parses an ingredient as the format it is told, and a file
    named for another (a PNG saved as .jpg) would fail the signing of a finished render. None where the
    content is none of `content_mime`'s; such an input is described by title alone. Raises VivifyError naming
    a file that cannot be read."""
    try:
        with open(path, "rb") as file:
            return content_mime(file.read(16))
    except OSError as error:
        raise VivifyError(f"{path}: cannot read ({error.strerror})") from None


def content_mime(head: bytes) -> str | None:
    """The format of a file from its first 16 bytes (never its name), among those c2pa reads in full: PNG,
    JPEG, GIF, WebP, WAV, FLAC, MP3 (with an ID3 tag), MP4 and QuickTime (whose first box is ftyp, or an
    older QuickTime file's moov, mdat, wide, free or skip); else None."""
    return next((mime for test, mime in _SIGNATURES if test(head)), None)


_SIGNATURES = (
    (lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"), "image/png"),
    (lambda head: head.startswith(b"\xff\xd8"), "image/jpeg"),
    (lambda head: head.startswith((b"GIF87a", b"GIF89a")), "image/gif"),
    (lambda head: head.startswith(b"RIFF") and head[8:12] == b"WEBP", "image/webp"),
    (lambda head: head.startswith(b"RIFF") and head[8:12] == b"WAVE", "audio/wav"),
    (lambda head: head.startswith(b"fLaC"), "audio/flac"),
    (lambda head: head.startswith(b"ID3"), "audio/mpeg"),
    (lambda head: head[4:12] == b"ftypqt  ", "video/quicktime"),
    (lambda head: head[4:8] == b"ftyp", "video/mp4"),
    (lambda head: head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"), "video/quicktime"),
)


def _detail(error: c2pa.C2paError) -> str:
    """c2pa's message on one line, without its kind ("Signature: "), its preamble before a list of validation
    failures, or the failures' JUMBF locations."""
    text = " ".join(str(error).split(": ", 1)[-1].split())
    text = text.split("failures: ", 1)[-1]
    return re.sub(r" \(self#jumbf=[^)]*\)", "", text)


# -- reading --------------------------------------------------------------------------------------------------


def _report(found: bool, **fields: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"found": found, "validation_state": None, "trusted": False, "signer": None,
                              "issuer": None, "actions": [], "digital_source_type": None, "ingredients": [],
                              "content_id": None, "extra": None, "errors": []}
    report.update(fields)
    return report


def _summarise(store: dict[str, Any], crjson: dict[str, Any]) -> dict[str, Any]:
    label = store["active_manifest"]
    manifest = store["manifests"][label]
    actions: list[str] = []
    source_type = content_id = extra = None
    for assertion in manifest.get("assertions", []):
        # Repeated labels get a "__1" suffix; v1 and v2 actions share the fields read here.
        base = assertion["label"].split("__")[0]
        if base in ("c2pa.actions", "c2pa.actions.v2"):
            for action in assertion["data"].get("actions", []):
                actions.append(action.get("action"))
                source_type = source_type or action.get("digitalSourceType")
        elif base == ASSERTION_LABEL:
            content_id, extra = assertion["data"].get("content_id"), assertion["data"].get("extra")

    results = store.get("validation_results", {}).get("activeManifest", {})
    errors = [status["code"] for status in results.get("failure", []) if status["code"] != _UNTRUSTED]

    # crjson has the certificate's subject and issuer in full; json() only their CN and O.
    certificate = next((m.get("signature", {}).get("certificateInfo", {}) for m in crjson.get("manifests", [])
                        if m.get("label") == label), {})
    info = manifest.get("signature_info", {})
    state = store.get("validation_state")
    return _report(
        found=True, validation_state=state, trusted=state == "Trusted",
        signer=_dn(certificate.get("subject")) or info.get("common_name"),
        issuer=_dn(certificate.get("issuer")) or info.get("issuer"),
        actions=actions, digital_source_type=source_type,
        ingredients=[ingredient.get("title") for ingredient in manifest.get("ingredients", [])],
        content_id=content_id, extra=extra, errors=errors)


def _dn(name: dict[str, Any] | None) -> str | None:
    return ", ".join(f"{key}={value}" for key, value in name.items()) if name else None
