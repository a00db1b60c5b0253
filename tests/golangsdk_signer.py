"""An AK/SK client that signs as golangsdk's `auth/core/signer` does (the Terraform providers' signer),
written from the documented behaviour, independently of shim/translate/signing.py:

- the signed headers are the headers the request holds when it is signed, lower-cased and sorted;
  Go keeps Host outside its header map, so `host` is not among them;
- X-Sdk-Date is set when absent (and so always signed);
- canonical URI: each path segment escaped, joined by `/`, with a trailing `/`;
- canonical query: keys sorted, each key's values sorted, both escaped, joined by `&`; the request is
  sent with exactly that query;
- canonical headers: `name:value` per signed header, its values sorted and trimmed, one line each;
- body hash: the X-Sdk-Content-Sha256 header when present, else the SHA-256 of the body;
- string to sign `SDK-HMAC-SHA256\\n<date>\\n<hex sha256 of the canonical request>`, signed with the
  secret key itself (hex HMAC-SHA256);
- headers the caller adds after signing (the provider's X-Project-Id) are sent but not signed.

`expected_authorization` recomputes, the same way, what a gateway in front of an upstream expects of
a request as it arrived there: the test's own check of the signatures the shim sends on.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import unquote

from multidict import CIMultiDict

ALGORITHM = "SDK-HMAC-SHA256"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def go_escape(text: str) -> str:
    """Every byte but the unreserved ones as %XX (upper-case hex), as the signer escapes."""
    return "".join(chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in text.encode())


def canonical_uri(path: str) -> str:
    """`path` decoded (as Go's URL.Path holds it), each segment escaped again."""
    uri = "/".join(go_escape(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return "&".join(f"{go_escape(key)}={go_escape(value)}"
                    for key in sorted(grouped) for value in sorted(grouped[key]))


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    pairs = []
    for item in raw_query.split("&"):
        if item:
            key, _, value = item.partition("=")
            pairs.append((unquote(key.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


def _signature(secret: str, method: str, path: str, query: str, headers: Mapping[str, Sequence[str]],
               signed: Sequence[str], body_hash: str, date: str) -> str:
    lines = "".join(f"{name}:{value.strip()}\n" for name in signed for value in sorted(headers[name]))
    canonical = "\n".join((method, canonical_uri(path), query, lines, ";".join(signed), body_hash))
    to_sign = f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def _body_hash(headers: Mapping[str, Sequence[str]], body: bytes) -> str:
    declared = headers.get("x-sdk-content-sha256")
    return declared[0] if declared else hashlib.sha256(body).hexdigest()


class GoSigner:
    """golangsdk's signer with one key pair."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key = access_key
        self._secret = secret_key

    def sign(self, method: str, path: str, query: Iterable[tuple[str, str]], headers: Sequence[tuple[str, str]],
             body: bytes = b"", now: datetime | None = None) -> tuple[str, list[tuple[str, str]]]:
        """The request target to send (path and the canonical query) and the header lines to send:
        `headers` (the Go header map: Host is not in it), X-Sdk-Date, Authorization."""
        lines = list(headers)
        if not any(name.lower() == "x-sdk-date" for name, _ in lines):
            lines.append(("X-Sdk-Date", (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")))
        grouped: dict[str, list[str]] = {}
        for name, value in lines:
            grouped.setdefault(name.lower(), []).append(value)
        signed = sorted(grouped)
        query_string = canonical_query(query)
        signature = _signature(self._secret, method, path, query_string, grouped, signed,
                               _body_hash(grouped, body), grouped["x-sdk-date"][0])
        lines.append(("Authorization",
                      f"{ALGORITHM} Access={self.access_key}, SignedHeaders={';'.join(signed)}, Signature={signature}"))
        return (f"{path}?{query_string}" if query_string else path), lines


def signed_headers_of(authorization: str) -> list[str]:
    return authorization.split("SignedHeaders=")[1].split(",")[0].split(";")


def expected_authorization(secret_key: str, method: str, raw_path: str, raw_query: str,
                           headers: CIMultiDict[str], body: bytes) -> str:
    """The Authorization a gateway expects of a request as it arrived (method, raw path and query,
    its headers with their Host, its body), over the headers its own Authorization names."""
    authorization = headers["Authorization"]
    access = authorization.split("Access=")[1].split(",")[0]
    signed = signed_headers_of(authorization)
    grouped = {name: headers.getall(name, []) for name in signed}
    if any(not values for values in grouped.values()):
        return "<a signed header is missing>"
    signature = _signature(secret_key, method, raw_path, canonical_query(query_pairs(raw_query)), grouped, signed,
                           _body_hash({k.lower(): headers.getall(k) for k in headers}, body),
                           headers.get("X-Sdk-Date", ""))
    return f"{ALGORITHM} Access={access}, SignedHeaders={';'.join(signed)}, Signature={signature}"
