"""TLS and mutual TLS from PEM files, checked at start-up.

Every file is read and parsed before the server listens or a channel is
opened, so a missing, unreadable or garbage PEM stops start-up with an
ArtifactError that names the flag and the file, instead of a handshake that
fails later for every caller. The checks use the standard library's OpenSSL
bindings: certificates must parse, a private key must match its certificate,
and a CA bundle must hold at least one certificate. Encrypted private keys are
refused (the sidecar has no way to ask for a passphrase).
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from pathlib import Path

import grpc

from ._errors import ArtifactError, InvalidArgument

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


def server_credentials(
    cert: Path | None,
    key: Path | None,
    client_ca: Path | None = None,
    *,
    flags: tuple[str, str, str] = ("--tls-cert", "--tls-key", "--tls-client-ca"),
) -> grpc.ServerCredentials | None:
    """Credentials for a TLS listener; None when no TLS option is set (plaintext).

    With ``client_ca`` the server requires a client certificate signed by one
    of its CAs (mutual TLS).
    """
    cert_flag, key_flag, ca_flag = flags
    if cert is None and key is None:
        if client_ca is not None:
            raise InvalidArgument(f"{ca_flag} needs {cert_flag} and {key_flag}")
        return None
    if cert is None or key is None:
        raise InvalidArgument(f"{cert_flag} and {key_flag} go together; set both")
    chain, private_key = _key_pair(cert, key, cert_flag, key_flag)
    roots = _ca_bundle(client_ca, ca_flag) if client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(private_key, chain)], root_certificates=roots, require_client_auth=roots is not None
    )


def channel_credentials(
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    *,
    flags: tuple[str, str, str] = ("--ca", "--cert", "--key"),
) -> grpc.ChannelCredentials | None:
    """Credentials for a TLS channel; None when no TLS option is set (plaintext).

    ``ca`` verifies the server (without it, the system's trust store does);
    ``cert`` and ``key`` present a client certificate for mutual TLS.
    """
    ca_flag, cert_flag, key_flag = flags
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise InvalidArgument(f"{cert_flag} and {key_flag} go together; set both")
    roots = _ca_bundle(ca, ca_flag) if ca is not None else None
    chain = private_key = None
    if cert is not None and key is not None:
        chain, private_key = _key_pair(cert, key, cert_flag, key_flag)
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=private_key, certificate_chain=chain
    )


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{flag} {path}: cannot read ({exc.strerror or exc})") from exc


def _blocks(data: bytes, path: Path, flag: str) -> list[tuple[str, bytes]]:
    """(label, DER) for every PEM block; garbage inside a block is an error."""
    blocks = []
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1).decode("ascii")
        try:
            der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ArtifactError(f"{flag} {path}: the {label} block is not valid base64") from exc
        if not der.startswith(b"\x30"):
            raise ArtifactError(f"{flag} {path}: the {label} block is not DER data")
        blocks.append((label, der))
    return blocks


def _certificates(path: Path, flag: str) -> bytes:
    data = _read(path, flag)
    if not any(label == "CERTIFICATE" for label, _ in _blocks(data, path, flag)):
        raise ArtifactError(
            f"{flag} {path}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)"
        )
    return data


def _ca_bundle(path: Path, flag: str) -> bytes:
    data = _certificates(path, flag)
    try:
        ssl.create_default_context(cadata=data.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{flag} {path}: not a usable CA bundle ({_reason(exc)})") from exc
    return data


def _key_pair(cert: Path, key: Path, cert_flag: str, key_flag: str) -> tuple[bytes, bytes]:
    """The certificate chain and private key bytes, checked to belong together."""
    chain = _certificates(cert, cert_flag)
    private_key = _read(key, key_flag)
    labels = [label for label, _ in _blocks(private_key, key, key_flag)]
    if "ENCRYPTED PRIVATE KEY" in labels or b"Proc-Type: 4,ENCRYPTED" in private_key:
        raise ArtifactError(
            f"{key_flag} {key}: the private key is encrypted; the sidecar cannot ask for a "
            "passphrase (decrypt it with `openssl pkey -in KEY -out KEY.plain`)"
        )
    if not any(label.endswith("PRIVATE KEY") for label in labels):
        raise ArtifactError(
            f"{key_flag} {key}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise ArtifactError(
            f"{cert_flag} {cert} / {key_flag} {key}: not a usable certificate and matching "
            f"private key ({_reason(exc)})"
        ) from exc
    except OSError as exc:
        raise ArtifactError(f"{cert_flag} {cert} / {key_flag} {key}: cannot read ({exc})") from exc
    return chain, private_key


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if reason == "KEY_VALUES_MISMATCH":
        return "the private key does not belong to the certificate"
    return str(reason or exc)
