"""AK/SK request signatures (`SDK-HMAC-SHA256`), as the cloud's API gateway and SDKs compute them.

The one copy of the algorithm in the project: the shim verifies incoming signed requests and signs
its own requests to SDRS and to the legacy endpoint with it, and the SDRS simulator verifies with it.
Pure: no I/O, no clock (callers pass the time).

    CanonicalRequest = METHOD \\n CanonicalURI \\n CanonicalQuery \\n CanonicalHeaders \\n SignedHeaders
                       \\n PayloadHash
    StringToSign     = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(CanonicalRequest))
    Signature        = hex(hmac_sha256(SK, StringToSign))

CanonicalURI: each path segment unquoted then quoted with safe "~", always ending in "/".
CanonicalQuery: (key, value) pairs sorted, both quoted with safe "~", joined by "&".
CanonicalHeaders: "name:value.strip()\\n" for each signed header, in the order signed.
PayloadHash: sha256 of the empty string for an empty body, else the X-Sdk-Content-Sha256 header
(the SDKs send "UNSIGNED-PAYLOAD" for non-JSON bodies), else hex(sha256(body)).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
CONTENT_HASH_HEADER = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# How far X-Sdk-Date may be from the verifier's clock, either way: the API gateway's limit. An older
# signed request is refused as a replay.
MAX_CLOCK_SKEW_SECONDS = 15 * 60
EMPTY_PAYLOAD_HASH = hashlib.sha256(b"").hexdigest()

# A signature that does not bind the host and the time could be replayed anywhere, at any time.
REQUIRED_SIGNED_HEADERS = ("host", "x-sdk-date")
# Signed whenever present when the shim signs a request itself (temporary credentials, project scope).
CARRIED_SIGNED_HEADERS = ("content-type", "x-project-id", "x-domain-id", "x-security-token", "x-sdk-content-sha256")
# Never signed when re-signing: they are replaced, recomputed or dropped on the way to the next hop.
_NEVER_RESIGNED = frozenset({
    "authorization", "content-length", "expect", "connection", "keep-alive", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization",
})  # fmt: skip


@dataclass(frozen=True)
class KeyPair:
    """An access key and its secret key. The secret never shows in a repr, an exception or a log."""

    access_key: str
    secret_key: str = field(repr=False)

    def __repr__(self) -> str:
        return f"KeyPair(access_key={self.access_key[:4]!r}..., secret_key=<hidden>)"


@dataclass(frozen=True)
class Authorization:
    """The parsed `Authorization: SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...`."""

    access_key: str
    signed_headers: tuple[str, ...]
    signature: str = field(repr=False)


@dataclass(frozen=True)
class SignedRequest:
    """What a signature covers. `headers` must look names up regardless of case (a CIMultiDict)."""

    method: str
    raw_path: str  # as on the wire (percent-encoded), without the query string
    raw_query: str
    headers: Mapping[str, str]
    payload_hash: str  # see payload_hash_of_body / payload_hash_without_body


class SignatureRejected(Exception):
    """The request's signature does not verify; the message says why, never with a secret in it."""


def is_signed(authorization: str | None) -> bool:
    """Whether an Authorization value is an AK/SK signature (of any SDK algorithm)."""
    return authorization is not None and authorization.startswith("SDK-HMAC-")


def parse_authorization(value: str) -> Authorization:
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureRejected(f"unsupported signing algorithm (only {ALGORITHM})")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, field_value = part.strip().partition("=")
        if not sep:
            raise SignatureRejected("invalid authorization header")
        fields[key] = field_value
    try:
        access, names, signature = fields["Access"], fields["SignedHeaders"], fields["Signature"]
    except KeyError:
        raise SignatureRejected("invalid authorization header") from None
    signed_headers = tuple(names.split(";"))
    if not access or not signature or any(not name or name != name.lower() for name in signed_headers):
        raise SignatureRejected("invalid authorization header")
    return Authorization(access, signed_headers, signature)


def identify(headers: Mapping[str, str], keys: Mapping[str, KeyPair], now: float) -> tuple[KeyPair, Authorization]:
    """The checks that need no body: a known access key, X-Sdk-Date within MAX_CLOCK_SKEW_SECONDS of
    `now` (epoch seconds), host and X-Sdk-Date among the signed headers."""
    auth = parse_authorization(headers.get("Authorization", ""))
    key = keys.get(auth.access_key)
    if key is None:
        raise SignatureRejected("access key not found")
    check_date(headers.get(DATE_HEADER), now)
    if any(name not in auth.signed_headers for name in REQUIRED_SIGNED_HEADERS):
        raise SignatureRejected("host and x-sdk-date must be signed")
    return key, auth


def verify(request: SignedRequest, keys: Mapping[str, KeyPair], now: float) -> tuple[KeyPair, Authorization]:
    """The key pair that signed `request` and its parsed Authorization; SignatureRejected otherwise.
    Checked as the API gateway does: `identify`, then the signature itself."""
    key, auth = identify(request.headers, keys, now)
    canonical = canonical_request(request, auth.signed_headers)
    if not hmac.compare_digest(signature(key, str(request.headers[DATE_HEADER]), canonical), auth.signature):
        raise SignatureRejected("verify aksk signature fail")
    return key, auth


def check_date(sdk_date: str | None, now: float) -> None:
    if sdk_date is None:
        raise SignatureRejected("X-Sdk-Date header missing")
    try:
        signed_at = datetime.strptime(sdk_date, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureRejected("invalid X-Sdk-Date") from None
    if abs(signed_at.timestamp() - now) > MAX_CLOCK_SKEW_SECONDS:
        raise SignatureRejected("request expired (X-Sdk-Date too far from server time)")


def sdk_date(now: float) -> str:
    """X-Sdk-Date for a request signed at `now` (epoch seconds)."""
    return datetime.fromtimestamp(now, UTC).strftime(DATE_FORMAT)


def authorization(key: KeyPair, request: SignedRequest, signed_headers: Iterable[str]) -> str:
    """The Authorization value that signs `request` (whose headers include Host and X-Sdk-Date)."""
    names = tuple(sorted(set(signed_headers)))
    canonical = canonical_request(request, names)
    return (f"{ALGORITHM} Access={key.access_key}, SignedHeaders={';'.join(names)}, "
            f"Signature={signature(key, request.headers[DATE_HEADER], canonical)}")


def headers_to_sign(headers: Mapping[str, str], client_signed: Iterable[str] = ()) -> tuple[str, ...]:
    """What the shim signs on a hop: host and X-Sdk-Date, the headers the client had signed that go
    on unchanged in name (their values as they leave), and the carried ones that are present."""
    present = {name.lower() for name in headers}
    wanted = {*REQUIRED_SIGNED_HEADERS, *CARRIED_SIGNED_HEADERS, *client_signed}
    return tuple(sorted(name for name in wanted if name in present and name not in _NEVER_RESIGNED))


def signature(key: KeyPair, date: str, canonical: str) -> str:
    string_to_sign = f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(key.secret_key.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def canonical_request(request: SignedRequest, signed_headers: tuple[str, ...]) -> str:
    return "\n".join((
        request.method.upper(), canonical_uri(request.raw_path), canonical_query(request.raw_query),
        canonical_headers(request.headers, signed_headers), ";".join(signed_headers), request.payload_hash,
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


def canonical_headers(headers: Mapping[str, str], signed_headers: tuple[str, ...]) -> str:
    lines = []
    for name in signed_headers:
        value = headers.get(name)
        if value is None:
            raise SignatureRejected(f"signed header {name[:64]!r} missing from the request")
        lines.append(f"{name}:{value.strip()}\n")
    return "".join(lines)


def payload_hash_without_body(headers: Mapping[str, str], has_body: bool) -> str | None:
    """The payload hash when it can be known before the body is read (no body, or UNSIGNED-PAYLOAD);
    None when the body itself is signed and must be hashed first."""
    if not has_body:
        return EMPTY_PAYLOAD_HASH
    if headers.get(CONTENT_HASH_HEADER) == UNSIGNED_PAYLOAD:
        return UNSIGNED_PAYLOAD
    return None


def payload_hash_of_body(headers: Mapping[str, str], body: bytes) -> str:
    """The payload hash of a read body; a declared X-Sdk-Content-Sha256 must be the body's hash."""
    if not body:
        return EMPTY_PAYLOAD_HASH
    declared = headers.get(CONTENT_HASH_HEADER)
    if declared == UNSIGNED_PAYLOAD:
        return declared
    actual = hashlib.sha256(body).hexdigest()
    if declared is not None and declared.strip().lower() != actual:
        raise SignatureRejected("the body does not match its X-Sdk-Content-Sha256")
    return declared if declared is not None else actual
