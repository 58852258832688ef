"""Who signs vivify's C2PA manifests: the user's certificate, or a local identity made once per installation.

Design:

* Sources, first match wins: the `cert`/`key` arguments (the CLI's --sign-cert/--sign-key), the environment
  variables VIVIFY_SIGN_CERT/VIVIFY_SIGN_KEY (paths to PEM files), else the local identity.
* Local identity. C2PA refuses a self-signed signing certificate, so the first run creates a small CA and a
  leaf certificate issued by it (EC P-256, signed ES256) in `data_dir()/signing/`: `ca.pem` (the CA,
  which `vivify verify` trusts on this installation), `signer.pem` (leaf then CA, the chain C2PA embeds)
  and `signer.key` (PKCS#8). The CA's private key is discarded once the leaf is issued, so nothing else
  can ever chain to this CA. Names carry a random installation id, never the user or host name, because
  every output embeds them. The files are written into a private temporary folder that is renamed into
  place, so two processes racing on the first run agree on one identity (the loser's is discarded).
* Eager checks. `load_identity` runs before any rendering, so a certificate that cannot sign fails at
  once with one line naming the file: unreadable, not PEM, key not matching, outside its validity
  period, self-signed, a CA; then a trial signature (and c2pa's validation of it) of a tiny in-memory
  image applies c2pa's own certificate profile rules (key usage, extended key usage ...) up front.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vivify.errors import VivifyError

CERT_ENV = "VIVIFY_SIGN_CERT"
KEY_ENV = "VIVIFY_SIGN_KEY"

_LOCAL_FOLDER = "signing"
_CA_FILE, _CHAIN_FILE, _KEY_FILE = "ca.pem", "signer.pem", "signer.key"
# Long enough never to get in the way; the CA is only ever used to verify this one leaf.
_LOCAL_VALIDITY = dt.timedelta(days=10 * 365)
# Backdated a little so that a clock running slightly behind still sees the certificates as valid.
_CLOCK_SKEW = dt.timedelta(hours=1)

# C2PA's algorithms by key type. RSA must be RSASSA-PSS (C2PA forbids PKCS#1 v1.5 signatures).
_EC_ALGORITHMS = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
# Extended key usages of the local leaf: c2pa's validator (with no trust configuration) requires
# emailProtection; id-kp-documentSigning (RFC 9336) is the one that says what the key is for.
_LEAF_USAGES = [ExtendedKeyUsageOID.EMAIL_PROTECTION, x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")]


@dataclass(frozen=True)
class SigningIdentity:
    """A certificate chain and its private key, checked to be able to sign C2PA manifests."""

    certificate_chain: bytes  # PEM: the signing (leaf) certificate first, then its issuing CA(s)
    private_key: bytes = field(repr=False)  # PEM, PKCS#8, unencrypted
    algorithm: str  # c2pa's name: "es256", "es384", "es512", "ps256" or "ed25519"
    source: Literal["user", "local"]
    subject: str  # the leaf's subject, "CN=..., O=..." in the certificate's order (as read_manifest gives it)
    issuer: str  # the leaf's issuer, likewise
    fingerprint: str  # SHA-256 of the leaf certificate (DER), hex


def data_dir() -> Path:
    """vivify's per-user data folder: $VIVIFY_DATA_DIR, else $XDG_DATA_HOME/vivify, else ~/.local/share/vivify."""
    if os.environ.get("VIVIFY_DATA_DIR"):
        return Path(os.environ["VIVIFY_DATA_DIR"])
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]) / "vivify"
    return Path.home() / ".local" / "share" / "vivify"


def load_identity(cert: str | Path | None = None, key: str | Path | None = None) -> SigningIdentity:
    """The identity to sign with: `cert` and `key` (PEM files) if given, else the files named by
    VIVIFY_SIGN_CERT/VIVIFY_SIGN_KEY, else the local identity (created on first use).

    Raises VivifyError, one line naming the file and the problem, when the identity cannot sign.
    """
    if cert is None and key is None:
        cert, key = os.environ.get(CERT_ENV) or None, os.environ.get(KEY_ENV) or None
        if (cert is None) != (key is None):
            raise VivifyError(f"{CERT_ENV} and {KEY_ENV} must be set together (a certificate and its key)")
    if cert is None or key is None:
        if cert is not None or key is not None:
            raise VivifyError("a signing certificate and its key must be given together (--sign-cert, --sign-key)")
        return _local_identity()
    return _load(Path(cert), Path(key), "user")


def local_trust_anchor() -> bytes | None:
    """The local CA certificate (PEM) if this installation has made one; never creates it."""
    try:
        return (data_dir() / _LOCAL_FOLDER / _CA_FILE).read_bytes()
    except OSError:
        return None


# -- loading and checking -------------------------------------------------------------------------------------


def _load(cert_path: Path, key_path: Path, source: Literal["user", "local"]) -> SigningIdentity:
    try:
        chain = x509.load_pem_x509_certificates(_read(cert_path))
    except ValueError:
        raise VivifyError(f"{cert_path}: not a PEM certificate") from None
    leaf = chain[0]
    if _is_ca(leaf):
        raise VivifyError(f"{cert_path}: starts with a CA certificate; the signing certificate must come first")
    private_key = _load_key(key_path)
    if private_key.public_key().public_bytes(*_SPKI) != leaf.public_key().public_bytes(*_SPKI):
        raise VivifyError(f"{key_path}: does not match the certificate {cert_path}")
    now = dt.datetime.now(dt.timezone.utc)
    if leaf.not_valid_after_utc < now:
        raise VivifyError(f"{cert_path}: expired on {leaf.not_valid_after_utc.date().isoformat()}")
    if leaf.not_valid_before_utc > now:
        raise VivifyError(f"{cert_path}: not valid before {leaf.not_valid_before_utc.date().isoformat()}")
    if leaf.subject == leaf.issuer:
        raise VivifyError(f"{cert_path}: self-signed; C2PA needs a certificate issued by a CA")

    identity = SigningIdentity(
        certificate_chain=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
        private_key=private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()),
        algorithm=_algorithm(private_key, key_path),
        source=source,
        subject=_dn(leaf.subject),
        issuer=_dn(leaf.issuer),
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
    )
    # Imported here: manifest imports this module.
    from vivify.provenance.manifest import trial_sign

    refusal = trial_sign(identity)
    if refusal is not None:
        hint = ("; a C2PA signing certificate needs X.509 v3, the digitalSignature key usage and the "
                "emailProtection extended key usage") if "invalid" in refusal or "EKU" in refusal else ""
        raise VivifyError(f"{cert_path}: rejected by C2PA ({refusal}){hint}")
    return identity


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise VivifyError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise VivifyError(f"{path}: is a folder, not a file") from None
    except OSError as error:
        raise VivifyError(f"{path}: cannot read ({error.strerror or error})") from None


def _load_key(path: Path) -> _PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except TypeError:  # cryptography's way of saying "this key needs a password"
        raise VivifyError(f"{path}: encrypted private keys are not supported "
                          "(decrypt it: openssl pkcs8 -topk8 -nocrypt)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise VivifyError(f"{path}: not a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise VivifyError(f"{path}: unsupported key type (use EC P-256, P-384 or P-521, RSA, or Ed25519)")
    return key


def _algorithm(key: _PrivateKey, path: Path) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _EC_ALGORITHMS:
            raise VivifyError(f"{path}: unsupported elliptic curve {key.curve.name} (use P-256, P-384 or P-521)")
        return _EC_ALGORITHMS[key.curve.name]
    return "ps256" if isinstance(key, rsa.RSAPrivateKey) else "ed25519"


def _dn(name: x509.Name) -> str:
    return ", ".join(f"{attribute.rfc4514_attribute_name}={attribute.value}" for attribute in name)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


# -- the local identity -------------------------------------------------------------------------------------


def _local_identity() -> SigningIdentity:
    folder = data_dir() / _LOCAL_FOLDER
    if not folder.is_dir():
        _create_local(folder)
    try:
        return _load(folder / _CHAIN_FILE, folder / _KEY_FILE, "local")
    except VivifyError as error:
        raise VivifyError(f"{error}; delete {folder} to create a new local signing identity") from None


def _create_local(folder: Path) -> None:
    try:
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = Path(tempfile.mkdtemp(prefix=f".{_LOCAL_FOLDER}.tmp-", dir=folder.parent))  # mode 0700
    except OSError as error:
        raise VivifyError(f"{folder.parent}: cannot create the local signing identity "
                          f"({error.strerror or error})") from None
    try:
        for name, data in _new_local_files().items():
            descriptor = os.open(temp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
        try:
            os.rename(temp, folder)  # atomic: either ours lands whole, or another process's is already there
        except OSError:
            if not folder.is_dir():
                raise
    except OSError as error:
        raise VivifyError(f"{folder}: cannot create the local signing identity ({error.strerror or error})") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # gone already when the rename succeeded


def _new_local_files() -> dict[str, bytes]:
    """A fresh CA and a leaf issued by it that meets the C2PA certificate profile; the CA key is dropped."""
    install_id = secrets.token_hex(4)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - _CLOCK_SKEW, now + _LOCAL_VALIDITY

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"vivify local CA {install_id}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(f"vivify {install_id}")).issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_LEAF_USAGES), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    return {
        _CA_FILE: ca_pem,
        _CHAIN_FILE: leaf.public_bytes(serialization.Encoding.PEM) + ca_pem,
        _KEY_FILE: key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
    }


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vivify (unverified local identity)")])
