"""The AK/SK key pairs the operator gives the shim (`aksk` in the config), read from their files or
environment variables into an immutable access key -> KeyPair lookup.

Errors name the config key and the file or variable, never a value read from it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from shim.config import AkskKeyPair
from shim.translate.signing import KeyPair
from shim.validation import ConfigError

KeyRing = Mapping[str, KeyPair]  # access key -> its pair
NO_KEYS: KeyRing = MappingProxyType({})

# An access key goes into the Authorization header between "Access=" and ",".
_ACCESS_KEY = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
_MAX_SECRET_FILE_BYTES = 4096


def load_key_ring(pairs: list[AkskKeyPair], source: str, environ: Mapping[str, str] | None = None) -> KeyRing:
    """Read every configured key pair; ConfigError (one line, no secret in it) when one is unusable."""
    environ = os.environ if environ is None else environ
    ring: dict[str, KeyPair] = {}
    for index, pair in enumerate(pairs):
        where = f"{source}: aksk[{index}]"
        access = _read(pair.access_key_file, pair.access_key_env, f"{where}.access_key", environ)
        secret = _read(pair.secret_key_file, pair.secret_key_env, f"{where}.secret_key", environ)
        if not _ACCESS_KEY.match(access):
            raise ConfigError(f"{where}.access_key: not an access key (letters, digits, '.', '_', '-')")
        if access in ring:
            raise ConfigError(f"{where}: the same access key as an earlier entry")
        ring[access] = KeyPair(access, secret)
    return MappingProxyType(ring)


def _read(file: Path | None, env: str | None, key: str, environ: Mapping[str, str]) -> str:
    if file is not None:
        try:
            with file.open("rb") as handle:
                raw = handle.read(_MAX_SECRET_FILE_BYTES + 1)
        except OSError as err:
            raise ConfigError(f"{key}_file: cannot read {file}: {err.strerror or type(err).__name__}") from None
        if len(raw) > _MAX_SECRET_FILE_BYTES:
            raise ConfigError(f"{key}_file: {file} is larger than {_MAX_SECRET_FILE_BYTES} bytes")
        try:
            value = raw.decode("utf-8").strip()  # a Secret written with `echo` ends in a newline
        except UnicodeDecodeError:
            raise ConfigError(f"{key}_file: {file} is not UTF-8 text") from None
        if not value:
            raise ConfigError(f"{key}_file: {file} is empty")
        return value
    assert env is not None  # AkskKeyPair guarantees one source per half
    value = environ.get(env, "").strip()
    if not value:
        raise ConfigError(f"{key}_env: the environment variable {env} is not set or empty")
    return value
