"""Encodings a credential arrives in: PEM blocks, DER, PKCS#12 detection, JSON text; and the key
and name helpers the parsers share. Pure, like push.credentials."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from core.errors import CredentialError
from core.jsonlimits import MAX_JSON_DEPTH, json_depth_exceeds

# Real credentials are a few KiB; anything bigger is a wrong file, and refusing early keeps a
# stray upload from being fed to the ASN.1 parsers.
MAX_CREDENTIAL_BYTES = 1024 * 1024

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")


def _as_bytes(data: object, *, what: str) -> bytes:
    if isinstance(data, str):
        raw = data.encode("utf-8")
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise CredentialError(f"{what} must be bytes or text, not {type(data).__name__}")
    if len(raw) > MAX_CREDENTIAL_BYTES:
        raise CredentialError(f"{what} is too large ({len(raw)} bytes; the limit is 1 MiB)")
    if not raw.strip():
        raise CredentialError(f"{what} is empty")
    return raw


def _json_object(data: bytes | str) -> dict[str, Any]:
    raw = _as_bytes(data, what="the service account JSON")
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some Windows editors add
    except UnicodeDecodeError:
        raise CredentialError("the service account file is not text (expected the JSON key file)") from None
    if json_depth_exceeds(text):
        # json.loads recurses per level: a few KiB of `[[[[` raised RecursionError (a 500).
        raise CredentialError(f"the service account JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        # Only the position: JSONDecodeError keeps the whole document in `.doc`, hence `from None`.
        raise CredentialError(
            f"the service account is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(info, dict):
        raise CredentialError("the service account JSON must be an object")
    return info


def _looks_like_pem(raw: bytes) -> bool:
    return b"-----BEGIN " in raw


def _pem_blocks(raw: bytes) -> list[tuple[str, str]]:
    """(label, block text) for each complete PEM block; text outside blocks ("Bag Attributes") is ignored."""
    # latin-1 never fails and maps bytes 1:1, so binary junk around the blocks cannot break the scan.
    text = raw.decode("latin-1").replace("\r\n", "\n")
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(text)]
    if len(blocks) < len(_PEM_BEGIN.findall(text)):
        raise CredentialError("a PEM block has no END line: the file is truncated")
    return blocks


def _load_pem_certificate(block: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(block.encode("latin-1"))
    except ValueError:
        raise CredentialError("the certificate could not be read (damaged or truncated PEM)") from None


def _load_pem_private_key(label: str, block: str) -> Any:
    encrypted = CredentialError(
        "the private key is encrypted; upload an unencrypted key, or the .p12 file with its password"
    )
    if label == "ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED" in block:
        raise encrypted
    try:
        return serialization.load_pem_private_key(block.encode("latin-1"), password=None)
    except TypeError:
        raise encrypted from None
    except (ValueError, UnsupportedAlgorithm):
        raise CredentialError(
            "the private key could not be read (damaged, truncated or an unsupported format)"
        ) from None


def _public_der(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _certificate_public_der(cert: x509.Certificate) -> bytes:
    try:
        return _public_der(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        raise CredentialError("the certificate's public key could not be read") from None


def _pkcs8_pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _name_value(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def _is_der_certificate(raw: bytes) -> bool:
    try:
        x509.load_der_x509_certificate(raw)
    except ValueError:
        return False
    return True


def _looks_like_pkcs12(raw: bytes) -> bool:
    """PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo, ... } spanning the whole input.

    Checking the shape first lets a failed load be blamed on the password, not on the file.
    """
    try:
        tag, content, end = _der_read(raw, 0)
        if tag != 0x30 or end != len(raw):
            return False
        children = _der_children(content)
        version_tag, version = next(children)
        auth_safe_tag, _ = next(children)
    except (ValueError, StopIteration):
        return False
    return version_tag == 0x02 and version == b"\x03" and auth_safe_tag == 0x30


def _der_read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER TLV at `pos`: (tag, content, position after it). Enough for the two shapes above."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER header")
    tag, length = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not expected here")
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4 or pos + size > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    end = pos + length
    if end > len(data):
        raise ValueError("DER value runs past the end")
    return tag, data[pos:end], end


def _der_children(content: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos < len(content):
        tag, value, pos = _der_read(content, pos)
        yield tag, value
