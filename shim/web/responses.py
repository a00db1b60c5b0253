"""Legacy-format responses: the error envelope and the request-id headers every answer carries."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping

from aiohttp import web

from shim.translate.legacy import LegacyError
from shim.translate.tables import SdrsErrorTable

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


# Version 4 (bits 76-79 = 0100) and the RFC 4122 variant (bits 62-63 = 10).
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_ids = random.Random()  # seeded from os.urandom once; request ids need uniqueness, not secrecy


def new_request_id() -> str:
    """Cinder's convention: `req-<uuid>` (a version-4 UUID)."""
    digits = f"{_ids.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"  # what uuid.UUID(version=4) sets
    return f"req-{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def incoming_request_id(headers: Mapping[str, str]) -> str | None:
    """Reuse the client's request id when it is a plain token (never echo header or log injection)."""
    for name in ("X-Openstack-Request-Id", "X-Request-Id"):
        value = headers.get(name)
        if value and _SAFE_REQUEST_ID.match(value):
            return value
    return None


def legacy_error_body(err: LegacyError, table: SdrsErrorTable) -> bytes:
    code = err.code or table.legacy_code(err.status, err.sdrs_code)
    return json.dumps({table.fault_name(err.status): {"message": err.message, "code": code}}).encode()


def legacy_error_response(err: LegacyError, table: SdrsErrorTable) -> web.Response:
    """`{"<faultName>": {"message": ..., "code": "EVS.xxxx"}}` with the legacy status."""
    response = web.Response(
        status=err.status,
        body=legacy_error_body(err, table),
        content_type="application/json",
    )
    if err.retry_after is not None:
        response.headers["Retry-After"] = str(err.retry_after)
    for name, value in err.headers:
        response.headers[name] = value
    return response


def empty_ok() -> web.Response:
    """What a legacy action answers on success: 200 and an empty body."""
    return web.Response(status=200, body=b"")
