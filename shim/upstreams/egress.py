"""Which client reaches an upstream: the lean HTTP/1.1 pool (shim/upstreams/http1.py) when the shim
connects to it directly, aiohttp's ClientSession only when `upstreams.trust_env` names an egress proxy
that applies to it (HTTP(S)_PROXY / NO_PROXY, as aiohttp reads them): the lean client speaks no proxy."""

from __future__ import annotations

import ssl

from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from shim.config import Timeouts
from shim.upstreams.http1 import Http1Pool


def env_proxy_for(url: URL) -> URL | None:
    """The egress proxy HTTP(S)_PROXY / NO_PROXY name for `url`, or None."""
    try:
        proxy, _ = get_env_proxy_for_url(url)
    except LookupError:
        return None
    return proxy


def needs_proxy(origin: URL, trust_env: bool) -> bool:
    return trust_env and env_proxy_for(origin) is not None


def direct_pool(
    origin: URL, *, tls: ssl.SSLContext | None, limit: int, timeouts: Timeouts, max_body: int, name: str,
) -> Http1Pool:
    """The lean pool to `origin` (scheme://host[:port]); https verifies with `tls`, else the system's CAs."""
    https = origin.scheme == "https"
    return Http1Pool(
        origin.raw_host or "", origin.port or (443 if https else 80),
        tls=(tls or ssl.create_default_context()) if https else None, limit=limit,
        connect_timeout=timeouts.connect, read_timeout=timeouts.read, total_timeout=timeouts.total,
        max_body=max_body, name=name,
    )
