"""Verification of Huawei API-gateway `SDK-HMAC-SHA256` request signatures (AK/SK auth).

Re-implements, for the receiving side, what huaweicloudsdkcore's `signer.Signer.sign` computes:

    CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders
                       \n PayloadHash
    StringToSign     = "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(sha256(CanonicalRequest))
    Signature        = hex(hmac_sha256(SK, StringToSign))

CanonicalURI: each path segment unquoted then quoted with safe "~", always ending in "/".
CanonicalQuery: (key, value) pairs sorted, both quoted with safe "~", joined by "&".
CanonicalHeaders: "name:value.strip()" for each signed header, each line ending in "\n".
PayloadHash: sha256 of the empty string for an empty body, else the X-Sdk-Content-Sha256 header
(the SDK sends "UNSIGNED-PAYLOAD" for non-JSON bodies), else hex(sha256(body)).
Kept free of any huaweicloudsdk import: the SDK is a test-only dependency.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_CLOCK_SKEW_SECONDS = 15 * 60  # API gateway limit for X-Sdk-Date (inferred from Huawei APIG docs)
_EMPTY_HASH = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class SignedRequest:
    method: str
    raw_path: str  # as on the wire, without the query string
    raw_query: str
    headers: Mapping[str, str]  # case-insensitive mapping expected (CIMultiDict)
    body: bytes


@dataclass(frozen=True)
class Authorization:
    access: str
    signed_headers: tuple[str, ...]
    signature: str


def is_signature_header(value: str | None) -> bool:
    return value is not None and value.startswith(ALGORITHM + " ")


def parse_authorization(value: str) -> Authorization | None:
    """`SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex` -> its fields, or None."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, field_value = part.strip().partition("=")
        if not sep:
            return None
        fields[key] = field_value
    try:
        return Authorization(fields["Access"], tuple(fields["SignedHeaders"].split(";")), fields["Signature"])
    except KeyError:
        return None


def verify(request: SignedRequest, credentials: Mapping[str, str], wall_now: float) -> str | None:
    """None when the signature is valid for one of `credentials` (AK -> SK), else why not."""
    auth = parse_authorization(request.headers.get("Authorization", ""))
    if auth is None:
        return "invalid authorization header"
    secret = credentials.get(auth.access)
    if secret is None:
        return "access key not found"
    sdk_date = request.headers.get("X-Sdk-Date")
    date_error = _check_date(sdk_date, wall_now)
    if date_error is not None:
        return date_error
    canonical = canonical_request(request, auth.signed_headers)
    if canonical is None:
        return "signed header missing from the request"
    expected = sign(secret, str(sdk_date), canonical)
    if not hmac.compare_digest(expected, auth.signature):
        return "verify aksk signature fail"
    return None


def _check_date(sdk_date: str | None, wall_now: float) -> str | None:
    if sdk_date is None:
        return "X-Sdk-Date header missing"
    try:
        signed_at = datetime.strptime(sdk_date, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return "invalid X-Sdk-Date"
    if abs(signed_at.timestamp() - wall_now) > MAX_CLOCK_SKEW_SECONDS:
        return "request expired (X-Sdk-Date too far from server time)"
    return None


def sign(secret: str, sdk_date: str, canonical: str) -> str:
    string_to_sign = f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def canonical_request(request: SignedRequest, signed_headers: tuple[str, ...]) -> str | None:
    headers = canonical_headers(request.headers, signed_headers)
    if headers is None:
        return None
    return "\n".join((
        request.method.upper(), canonical_uri(request.raw_path), canonical_query(request.raw_query),
        headers, ";".join(signed_headers), payload_hash(request),
    ))  # fmt: skip


def canonical_uri(raw_path: str) -> str:
    path = "/".join(quote(segment, safe="~") for segment in unquote(raw_path).split("/"))
    return path if path.endswith("/") else path + "/"


def canonical_query(raw_query: str) -> str:
    pairs = []
    for item in raw_query.split("&"):
        if item:
            key, _, value = item.partition("=")
            pairs.append((unquote(key), unquote(value)))
    pairs.sort()
    return "&".join(f"{quote(key, safe='~')}={quote(value, safe='~')}" for key, value in pairs)


def canonical_headers(headers: Mapping[str, str], signed_headers: tuple[str, ...]) -> str | None:
    lines = []
    for name in signed_headers:
        value = headers.get(name)
        if value is None:
            return None
        lines.append(f"{name}:{value.strip()}\n")
    return "".join(lines)


def payload_hash(request: SignedRequest) -> str:
    if not request.body:
        return _EMPTY_HASH
    declared = request.headers.get("X-Sdk-Content-Sha256")
    if declared:
        return declared
    return hashlib.sha256(request.body).hexdigest()
