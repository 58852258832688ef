"""The C2PA manifest and the signing identity: local CA and leaf, user certificates, sign and read back.

Media is made here (a 10-frame MP4/MOV from the astronaut, PNG, JPEG, GIF); VIVIFY_DATA_DIR points into
tmp_path so the real home is never touched. Nothing here uses the network (c2pa is configured offline).
"""

from __future__ import annotations

import datetime as dt
import re
import stat
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from vivify.demo import astronaut
from vivify.errors import VivifyError
from vivify.provenance.identity import SigningIdentity, data_dir, load_identity
from vivify.provenance.manifest import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    UnsupportedFormatError,
    mime_for,
    read_manifest,
    sign_file,
)

CONTENT_ID = "0123456789abcdef"
EXTRA = {"visible_label": {"text": "AI-generated", "position": "bottom-right"}}


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIVIFY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VIVIFY_SIGN_CERT", raising=False)
    monkeypatch.delenv("VIVIFY_SIGN_KEY", raising=False)
    return tmp_path / "data"


# -- media -----------------------------------------------------------------------------------------------------


def frame(size: int = 128, shift: int = 0) -> np.ndarray:
    return np.ascontiguousarray(np.roll(cv2.resize(astronaut(), (size, size)), shift, axis=1))


def write_video(path: Path, muxer: str = "mp4", frames: int = 10) -> Path:
    options = {"movflags": "+faststart"} if muxer == "mp4" else {}
    with av.open(str(path), "w", format=muxer, options=options) as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width = stream.height = 128
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame(shift=4 * i), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_image(path: Path, kind: str) -> Path:
    if kind == "GIF":
        Image.fromarray(frame()).save(path, format="GIF", save_all=True,
                                      append_images=[Image.fromarray(frame(shift=8))])
    else:
        Image.fromarray(frame()).save(path, format=kind)
    return path


MEDIA = {"mp4": lambda p: write_video(p, "mp4"), "mov": lambda p: write_video(p, "mov"),
         "png": lambda p: write_image(p, "PNG"), "jpg": lambda p: write_image(p, "JPEG"),
         "gif": lambda p: write_image(p, "GIF")}


# -- certificates for the "user" cases ---------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_user_pair(folder: Path, *, not_after: dt.datetime | None = None,
                    self_signed: bool = False) -> tuple[Path, Path]:
    """A test CA and a C2PA-conformant leaf (cert.pem: leaf then CA; key.pem: PKCS#8) in `folder`."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(_name("Test CA")).issuer_name(_name("Test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    issuer, signing_key = (_name("Test signer"), key) if self_signed else (ca.subject, ca_key)
    leaf = (x509.CertificateBuilder().subject_name(_name("Test signer")).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(not_after or now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(signing_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    chain = [leaf] if self_signed else [leaf, ca]
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# -- the local identity ------------------------------------------------------------------------------------------


def test_data_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert data_dir() == tmp_path / "data"
    monkeypatch.delenv("VIVIFY_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "vivify"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "share" / "vivify"


def test_local_identity_is_created_once_and_reused(private_data_dir: Path) -> None:
    first = load_identity()
    folder = private_data_dir / "signing"
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert sorted(files) == ["ca.pem", "signer.key", "signer.pem"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in folder.iterdir())
    assert files["signer.key"].startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8

    second = load_identity()
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == files
    assert (second.fingerprint, second.source, second.algorithm) == (first.fingerprint, "local", "es256")
    assert second.certificate_chain == files["signer.pem"]


def test_local_leaf_meets_the_c2pa_profile_and_chains_to_the_ca(private_data_dir: Path) -> None:
    identity = load_identity()
    leaf, ca = x509.load_pem_x509_certificates(identity.certificate_chain)
    assert (private_data_dir / "signing" / "ca.pem").read_bytes() == ca.public_bytes(serialization.Encoding.PEM)
    assert leaf.subject != leaf.issuer and leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)
    assert leaf.version == x509.Version.v3
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert (leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
            == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier)
    assert leaf.not_valid_before_utc < dt.datetime.now(dt.timezone.utc) < leaf.not_valid_after_utc
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert identity.subject == "CN=" + leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value \
        + ", O=vivify (unverified local identity)"


def test_racing_first_runs_agree_on_one_identity(private_data_dir: Path) -> None:
    barrier = threading.Barrier(4)
    results: list[SigningIdentity] = []

    def run() -> None:
        barrier.wait()
        results.append(load_identity())

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len({identity.fingerprint for identity in results}) == 1
    assert [path.name for path in private_data_dir.iterdir()] == ["signing"]  # no temporary folder left


def test_a_damaged_local_identity_says_how_to_recover(private_data_dir: Path) -> None:
    load_identity()
    folder = private_data_dir / "signing"
    (folder / "signer.key").unlink()
    with pytest.raises(VivifyError) as error:
        load_identity()
    assert str(error.value) == (f"{folder / 'signer.key'}: file not found; "
                                f"delete {folder} to create a new local signing identity")


# -- user certificates -------------------------------------------------------------------------------------------


def test_user_certificate_and_key(tmp_path: Path, private_data_dir: Path) -> None:
    cert, key = write_user_pair(tmp_path / "user")
    identity = load_identity(cert, key)
    assert (identity.source, identity.subject, identity.issuer) == ("user", "CN=Test signer", "CN=Test CA")
    assert not private_data_dir.exists()  # the local identity is not made when the user gives one


def test_environment_variables_are_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = write_user_pair(tmp_path / "user")
    monkeypatch.setenv("VIVIFY_SIGN_CERT", str(cert))
    monkeypatch.setenv("VIVIFY_SIGN_KEY", str(key))
    identity = load_identity()
    assert identity.source == "user"
    assert identity.fingerprint == x509.load_pem_x509_certificates(cert.read_bytes())[0] \
        .fingerprint(hashes.SHA256()).hex()
    monkeypatch.delenv("VIVIFY_SIGN_KEY")
    with pytest.raises(VivifyError, match="VIVIFY_SIGN_CERT and VIVIFY_SIGN_KEY must be set together"):
        load_identity()


def test_unusable_user_certificates_fail_with_one_line(tmp_path: Path) -> None:
    cert, key = write_user_pair(tmp_path / "good")
    other_cert, other_key = write_user_pair(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    missing = tmp_path / "missing.pem"
    expired_cert, expired_key = write_user_pair(
        tmp_path / "expired", not_after=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    self_cert, self_key = write_user_pair(tmp_path / "self", self_signed=True)
    ca_first = tmp_path / "ca-first.pem"
    ca_first.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                  for c in reversed(x509.load_pem_x509_certificates(cert.read_bytes()))))
    cases = [
        ((missing, key), f"{missing}: file not found"),
        ((cert, missing), f"{missing}: file not found"),
        ((garbage, key), f"{garbage}: not a PEM certificate"),
        ((cert, garbage), f"{garbage}: not a PEM private key"),
        ((cert, other_key), f"{other_key}: does not match the certificate {cert}"),
        ((expired_cert, expired_key), f"{expired_cert}: expired on 2024-01-01"),
        ((self_cert, self_key), f"{self_cert}: self-signed; C2PA needs a certificate issued by a CA"),
        ((tmp_path, key), f"{tmp_path}: is a folder, not a file"),
        ((ca_first, key), f"{ca_first}: starts with a CA certificate; the signing certificate must come first"),
    ]
    for (cert_path, key_path), message in cases:
        with pytest.raises(VivifyError) as error:
            load_identity(cert_path, key_path)
        assert str(error.value) == message
    with pytest.raises(VivifyError, match="must be given together"):
        load_identity(other_cert, None)


def test_c2pa_own_certificate_checks_run_up_front(tmp_path: Path) -> None:
    # Only the serverAuth usage, no key usage: vivify's own checks pass it, c2pa's trial signature does not.
    cert, key = write_user_pair(tmp_path / "user")
    leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_only = (x509.CertificateBuilder().subject_name(leaf.subject).issuer_name(_name("Other CA"))
                   .public_key(leaf.public_key()).serial_number(1).not_valid_before(leaf.not_valid_before_utc)
                   .not_valid_after(leaf.not_valid_after_utc)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    cert.write_bytes(server_only.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(VivifyError) as error:
        load_identity(cert, key)
    assert re.fullmatch(rf"{re.escape(str(cert))}: rejected by C2PA \(.+\); a C2PA signing certificate needs .+",
                        str(error.value))


# -- signing and reading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extension", "with_ingredients"),
                         [("mp4", True), ("mov", False), ("png", False), ("jpg", True), ("gif", True)])
def test_sign_and_read_back(tmp_path: Path, extension: str, with_ingredients: bool) -> None:
    identity = load_identity()
    source = MEDIA[extension](tmp_path / f"rendered.{extension}")
    original = source.read_bytes()
    ingredients = [write_image(tmp_path / "portrait.png", "PNG"), write_video(tmp_path / "driving.mp4")] \
        if with_ingredients else []
    # vivify signs hidden temp files whose names hide the extension: the format is passed explicitly.
    dest = tmp_path / f".out.{extension}.tmp-1a2b3c4d"
    sign_file(source, dest, mime=mime_for(Path(f"out.{extension}")), identity=identity, content_id=CONTENT_ID,
              title=f"out.{extension}", ingredients=ingredients, extra=EXTRA)
    assert source.read_bytes() == original

    report = read_manifest(dest, mime_for(Path(f"out.{extension}")))
    assert report["found"] and report["validation_state"] == "Trusted" and report["trusted"]
    assert report["errors"] == []
    assert (report["signer"], report["issuer"]) == (identity.subject, identity.issuer)
    assert (report["content_id"], report["extra"]) == (CONTENT_ID, EXTRA)
    if with_ingredients:
        assert report["actions"] == ["c2pa.opened", "c2pa.edited"]
        assert report["digital_source_type"] == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
        assert report["ingredients"] == ["portrait.png", "driving.mp4"]
    else:
        assert report["actions"] == ["c2pa.created"]
        assert report["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
        assert report["ingredients"] == []

    if extension in ("mp4", "mov"):  # still a playable video with every frame
        with av.open(str(dest)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 10
    else:
        with Image.open(dest) as image:
            assert image.size == (128, 128)


# Where each format keeps its pixels: a byte flipped there changes the content, not the container.
_MEDIA_DATA = {"mp4": b"mdat", "png": b"IDAT", "jpg": b"\xff\xda"}


@pytest.mark.parametrize("extension", sorted(_MEDIA_DATA))
def test_tampered_content_is_not_valid(tmp_path: Path, extension: str) -> None:
    source = MEDIA[extension](tmp_path / f"rendered.{extension}")
    signed = tmp_path / f"signed.{extension}"
    sign_file(source, signed, mime=mime_for(signed), identity=load_identity(), content_id=CONTENT_ID, title="out")
    data = bytearray(signed.read_bytes())
    position = data.rindex(_MEDIA_DATA[extension]) + 40
    data[position] ^= 0xFF
    signed.write_bytes(bytes(data))

    report = read_manifest(signed)
    assert report["found"] and report["validation_state"] == "Invalid" and not report["trusted"]
    assert any(code.endswith("Hash.mismatch") for code in report["errors"]), report["errors"]


def test_another_installations_signature_is_valid_but_untrusted(tmp_path: Path) -> None:
    cert, key = write_user_pair(tmp_path / "user")
    source = MEDIA["png"](tmp_path / "rendered.png")
    signed = tmp_path / "signed.png"
    sign_file(source, signed, mime="image/png", identity=load_identity(cert, key), content_id=CONTENT_ID, title="x")
    report = read_manifest(signed)
    assert (report["validation_state"], report["trusted"], report["errors"]) == ("Valid", False, [])
    assert (report["signer"], report["issuer"]) == ("CN=Test signer", "CN=Test CA")


@pytest.mark.parametrize("extension", ["mp4", "png"])
def test_unsigned_file_has_no_manifest(tmp_path: Path, extension: str) -> None:
    report = read_manifest(MEDIA[extension](tmp_path / f"plain.{extension}"))
    assert report == {"found": False, "validation_state": None, "trusted": False, "signer": None, "issuer": None,
                      "actions": [], "digital_source_type": None, "ingredients": [], "content_id": None,
                      "extra": None, "errors": []}


def test_formats(tmp_path: Path) -> None:
    assert [mime_for(Path(f"a.{e}")) for e in ("MP4", "m4v", "mov", "png", "jpeg", "jpg", "gif", "webm")] == [
        "video/mp4", "video/mp4", "video/quicktime", "image/png", "image/jpeg", "image/jpeg", "image/gif", None]
    webm = tmp_path / "out.webm"
    webm.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(60))
    with pytest.raises(UnsupportedFormatError):
        sign_file(webm, tmp_path / "signed.webm", mime="video/webm", identity=load_identity(),
                  content_id=CONTENT_ID, title="out.webm")
    assert not (tmp_path / "signed.webm").exists()
    with pytest.raises(UnsupportedFormatError):
        read_manifest(webm)


def test_unreadable_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video at all" * 10)
    with pytest.raises(VivifyError, match=rf"^{re.escape(str(corrupt))}: cannot read its C2PA data \("):
        read_manifest(corrupt)
    with pytest.raises(VivifyError, match=rf"^{re.escape(str(tmp_path / 'missing.png'))}: file not found$"):
        read_manifest(tmp_path / "missing.png")

    source = MEDIA["png"](tmp_path / "rendered.png")
    dest = tmp_path / "signed.png"
    with pytest.raises(VivifyError, match=r"missing-portrait\.png"):
        sign_file(source, dest, mime="image/png", identity=load_identity(), content_id=CONTENT_ID, title="x",
                  ingredients=[tmp_path / "missing-portrait.png"])
    assert not dest.exists()

