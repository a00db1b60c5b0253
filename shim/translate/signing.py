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
CanonicalHeaders: "name:value.strip()\\n" for each signed header, in the order signed; a header given more
than once has one such line per value, the values sorted (as golangsdk's signer writes them).
PayloadHash: sha256 of the empty string for an empty body, else the X-Sdk-Content-Sha256 header
(the SDKs send "UNSIGNED-PAYLOAD" for non-JSON bodies), else hex(sha256(body)).

Which signatures are accepted is the API gateway's rule (README, "AK/SK-signed clients and https"):
`x-sdk-date` must be signed, `host` need not be (golangsdk never signs it: Go keeps Host outside the
header map), and when it is, the signed Host must name an endpoint the verifier stands for.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from multidict import MultiMapping

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
CONTENT_HASH_HEADER = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# How far X-Sdk-Date may be from the verifier's clock, either way: the API gateway's limit. An older
# signed request is refused as a replay.
MAX_CLOCK_SKEW_SECONDS = 15 * 60
EMPTY_PAYLOAD_HASH = hashlib.sha256(b"").hexdigest()

# A signature that does not bind the time could be replayed at any time. `host` is not required: the
# gateway accepts signatures without it (golangsdk's), so a stricter verifier would refuse the provider.
REQUIRED_SIGNED_HEADERS = ("x-sdk-date",)
# Signed whenever present when the shim signs a request of its own (no client signature to follow).
OWN_SIGNED_HEADERS = ("host", "x-sdk-date", "content-type", "x-project-id", "x-domain-id", "x-security-token",
                      "x-sdk-content-sha256")
# An Authorization value in any spelling of an SDK signature: verified, or refused, never relayed as is.
_LOOKS_SIGNED = re.compile(r"sdk-hmac|signedheaders\s*=|signature\s*=", re.IGNORECASE)
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
    """Whether an Authorization value is meant as an AK/SK signature, in any spelling (any algorithm,
    any letter case): such a value is verified or refused, never passed on unverified."""
    return authorization is not None and _LOOKS_SIGNED.search(authorization) is not None


def signature_of(authorization_values: Sequence[str]) -> str | None:
    """The request's signature from all its Authorization header values; None when it has none.
    More than one Authorization header is refused: which one a verifier or an upstream reads differs."""
    if len(authorization_values) > 1:
        raise SignatureRejected("more than one Authorization header")
    if not authorization_values or not is_signed(authorization_values[0]):
        return None
    return authorization_values[0]


def authorization_values(headers: Mapping[str, str]) -> list[str]:
    """Every Authorization value of `headers` (a multidict holds each header line)."""
    if isinstance(headers, MultiMapping):
        return list(headers.getall("Authorization", ()))
    value = headers.get("Authorization")
    return [] if value is None else [value]


def parse_authorization(value: str) -> Authorization:
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:  # exactly as the SDKs spell it: `sdk-hmac-sha256` is not verified as it
        raise SignatureRejected(f"unsupported signing algorithm (only {ALGORITHM})")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, field_value = part.strip().partition("=")
        if not sep or key in fields:
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


def identify(
    headers: Mapping[str, str], keys: Mapping[str, KeyPair], now: float, hosts: Container[str] | None = None,
) -> tuple[KeyPair, Authorization]:
    """The checks that need no body: one Authorization header, a known access key, X-Sdk-Date within
    MAX_CLOCK_SKEW_SECONDS of `now` (epoch seconds) and signed, and, when `host` is signed and `hosts`
    given, a Host among `hosts` (as `comparable_host` writes them)."""
    auth = parse_authorization(signature_of(authorization_values(headers)) or "")
    key = keys.get(auth.access_key)
    if key is None:
        raise SignatureRejected("access key not found")
    check_date(headers.get(DATE_HEADER), now)
    if any(name not in auth.signed_headers for name in REQUIRED_SIGNED_HEADERS):
        raise SignatureRejected("x-sdk-date must be signed")
    if hosts is not None and "host" in auth.signed_headers:
        host = headers.get("Host", "")
        if comparable_host(host) not in hosts:
            # A request signed for another endpoint (another region): re-signed here, it would work.
            raise SignatureRejected(f"signed for another host ({host[:100]!r})")
    return key, auth


def comparable_host(host: str) -> str:
    """A Host value as signed hosts are compared: without case, a port of 80 or 443 as none."""
    host = host.strip().lower()
    return host.rpartition(":")[0] if host.endswith((":80", ":443")) else host


def verify(
    request: SignedRequest, keys: Mapping[str, KeyPair], now: float, hosts: Container[str] | None = None,
) -> tuple[KeyPair, Authorization]:
    """The key pair that signed `request` and its parsed Authorization; SignatureRejected otherwise.
    Checked as the API gateway does: `identify`, then the signature itself."""
    key, auth = identify(request.headers, keys, now, hosts)
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


def headers_to_sign(headers: Mapping[str, str], client_signed: Iterable[str] | None = None) -> tuple[str, ...]:
    """What the shim signs on a hop. For a client's request: exactly the names the client signed
    (`host` then names the hop's Host), those the hop carries, and X-Sdk-Date: never a header the
    client did not sign, which anyone replaying its request could have added. For a request of the
    shim's own (`client_signed` None): OWN_SIGNED_HEADERS, those present."""
    present = {name.lower() for name in headers}
    wanted = set(OWN_SIGNED_HEADERS if client_signed is None else (*client_signed, *REQUIRED_SIGNED_HEADERS))
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
    lines: list[str] = []
    for name in signed_headers:
        values = headers.getall(name, ()) if isinstance(headers, MultiMapping) else [headers.get(name)]
        if not values or None in values:
            raise SignatureRejected(f"signed header {name[:64]!r} missing from the request")
        lines += (f"{name}:{value.strip()}\n" for value in sorted(str(value) for value in values))
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
