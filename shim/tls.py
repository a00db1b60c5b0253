"""TLS contexts: the listener's (`listen.tls`, its certificate reloadable in place) and the upstreams'
(`upstreams.ca_file`, certificates always verified). Errors name the config key and the file."""

from __future__ import annotations

import ssl
from pathlib import Path

from shim.config import ListenTls
from shim.validation import ConfigError


def server_context(tls: ListenTls, source: str) -> ssl.SSLContext:
    """A server context holding `tls`'s certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, tls, source)
    return context


def reload_certificate(context: ssl.SSLContext, tls: ListenTls, source: str) -> None:
    """Put a new certificate and key into a running server context: connections accepted from now on
    use them, open ones keep theirs. Checked on a scratch context first, because a failed load half
    way (a certificate without its key) would leave the live context unusable."""
    _load_chain(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), tls, source)
    _load_chain(context, tls, source)


def client_context(ca_file: Path | None, source: str) -> ssl.SSLContext:
    """The context every upstream connection uses: the system's CAs, or `ca_file`'s; hostnames and
    certificates are always verified."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except OSError as err:  # ssl.SSLError is an OSError too
        raise ConfigError(f"{source}: upstreams.ca_file: cannot load {ca_file}: {_why(err)}") from None


def _load_chain(context: ssl.SSLContext, tls: ListenTls, source: str) -> None:
    _check_certificate(tls.certificate, f"{source}: listen.tls.certificate")
    try:
        tls.private_key.open("rb").close()
    except OSError as err:
        raise ConfigError(f"{source}: listen.tls.private_key: cannot read {tls.private_key}: {_why(err)}") from None
    try:
        # The password callback makes an encrypted key an error instead of a prompt on the terminal.
        context.load_cert_chain(tls.certificate, tls.private_key, password=lambda: b"")
    except OSError as err:
        raise ConfigError(
            f"{source}: listen.tls.private_key: {tls.private_key} is not the unencrypted PEM private key "
            f"of {tls.certificate.name}: {_why(err)}"
        ) from None


def _check_certificate(path: Path, key: str) -> None:
    """The file holds at least one PEM certificate (so a load failure after this is the key's)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {path}: {_why(err)}") from None
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    try:
        if start < 0 or stop < 0:
            raise ValueError("no certificate block")
        ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)])
    except ValueError:
        raise ConfigError(f"{key}: {path} is not a PEM certificate") from None


def _why(err: OSError) -> str:
    if isinstance(err, ssl.SSLError):
        return f"not usable PEM ({err.reason or 'ssl error'})"
    return err.strerror or type(err).__name__
