"""Re-signing at the upstream edges: a request whose AK/SK signature the shim has verified is signed
again, with the same key pair, for the host and path of the hop it takes (SDRS, or the legacy
endpoint's own host on the passthrough). The client's Authorization never goes on.

The web layer stores what it verified under `VERIFIED`; the upstream clients read it from there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from shim.translate.signing import DATE_HEADER, KeyPair, SignedRequest, authorization, headers_to_sign, sdk_date


@dataclass(frozen=True)
class VerifiedSignature:
    """An incoming request whose signature verified: who signed it and what the signature covered."""

    key: KeyPair
    signed_headers: tuple[str, ...]  # as the client signed them
    payload_hash: str  # the body's signed hash, UNSIGNED-PAYLOAD, or the empty body's hash
    body: bytes | None  # the body, when it had to be read to check its hash


VERIFIED = web.RequestKey("aksk_verified", VerifiedSignature)


def resign(
    headers: CIMultiDict[str], key: KeyPair, method: str, url: URL, payload_hash: str,
    client_signed: tuple[str, ...] | None = None,
) -> None:
    """Replace the signature in `headers` by one for `method` `url`, signed now, over the names the
    client signed (`client_signed`; None for a request of the shim's own: see `headers_to_sign`).
    The Host signed, when `host` is, is the one in `headers`, else (as aiohttp would send it) the URL's."""
    headers.popall("Authorization", None)
    headers.setdefault("Host", url.raw_authority)
    headers[DATE_HEADER] = sdk_date(time.time())
    request = SignedRequest(method, url.raw_path, url.raw_query_string, headers, payload_hash)
    headers["Authorization"] = authorization(key, request, headers_to_sign(headers, client_signed))
