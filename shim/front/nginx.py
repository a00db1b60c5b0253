"""`shim front-config --kind nginx`: an nginx.conf that puts nginx in front of the shim (pure).

The strangler-fig layout: nginx sends the URL space the shim answers itself (shim/translate/url_space.py)
to the shim and streams everything else straight to `upstreams.legacy`, at nginx's speed.

Routing is decided on the raw request target (`$request_uri`), never on nginx's normalised `$uri`:
nginx decodes escapes, merges slashes and resolves dot segments before it matches a `location`,
while the shim refuses non-canonical spellings of translated URLs (shim/translate/paths.py). So a
request goes to the shim when its raw path could name a translated URL after *any* normalisation
(see `SHIM_BOUND`); the shim then translates it, refuses it or passes it on itself. `proxy_pass`
without a URI part sends the request target to either upstream exactly as the client sent it
(nginx's `r->unparsed_uri`).

Per request the front does what plain nginx does plus a few lookups: the routing rule runs as one
compiled regex (`PLAIN_TARGET_REGEX`, `pcre_jit on`) that also captures the path for the access log,
the request id costs one lookup for a client that sends none, and both upstreams are named (a
`proxy_pass` through a variable would be parsed and looked up on every request). benchmarks/run.py
compares it with plain nginx writing the same kind of access line (README, Benchmark).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from ipaddress import ip_address

from yarl import URL

from shim.config import Settings
from shim.front import DEFAULT_CA_FILE
from shim.translate.legacy import LegacyError
from shim.translate.signing import comparable_host
from shim.translate.tables import SdrsErrorTable
from shim.translate.url_space import MANAGEMENT_PATHS, TRANSLATED_COLLECTIONS
from shim.validation import ConfigError
from shim.web.responses import legacy_error_body

SHIM_UPSTREAM = "http://evs_shim"
LEGACY_UPSTREAM = "evs_legacy"
RETRY_AFTER_SECONDS = 5  # as the shim's own 503 for an unreachable legacy endpoint
_SINGLE_QUOTE = "'"
_ERROR_PAGE_PREFIX = "/.evs-front-error/"  # internal locations, at a path no legacy URL has
_WILDCARD_HOSTS = frozenset({"", "*", "0.0.0.0", "::"})


@dataclass(frozen=True)
class ShimBoundPattern:
    """One rule of the front's routing table: a regex on the raw request target (path and query)."""

    regex: str
    ignore_case: bool
    why: str

    def matches(self, request_target: str) -> bool:
        return re.search(self.regex, request_target, re.IGNORECASE if self.ignore_case else 0) is not None


def _regex_alternatives(words: tuple[str, ...]) -> str:
    # `-` needs no escape outside a character class; left bare, the nginx.conf stays readable.
    return "(?:" + "|".join(re.escape(word).replace("\\-", "-") for word in words) + ")"


# What goes to the shim; everything else goes straight to the legacy endpoint. A raw path can name
# a translated URL after some normalisation only if it names a collection (in any case: some
# servers fold case), holds an escape (decoding is the only normalisation that makes letters
# appear) or a byte outside printable ASCII (Unicode compatibility folding; the shim's parser
# refuses those bytes anyway). Structural spellings (`;`, `//`, dot segments, backslashes) cannot
# spell a collection name by themselves; they go to the shim all the same, a margin that costs
# nothing for clients that never send them.
SHIM_BOUND: tuple[ShimBoundPattern, ...] = (
    ShimBoundPattern("^" + _regex_alternatives(MANAGEMENT_PATHS) + r"(?:\?|$)", False,
                     "the shim's own endpoints"),
    ShimBoundPattern(r"^[^?]*" + _regex_alternatives(TRANSLATED_COLLECTIONS), True,
                     "a translated collection named anywhere in the path, in any case"),
    ShimBoundPattern(r"^[^?]*(?:%|;|//|/\.|\\|[^\x21-\x7e])", False,
                     "an escape, `;`, `//`, a dot segment, a backslash or a byte outside printable ASCII"),
)


def front_routes_to_shim(request_target: str, authorization: str | None = None, aksk: bool = False) -> bool:
    """Whether the generated nginx.conf sends this raw request target to the shim. With `aksk`
    configured, every request with an Authorization header goes to the shim too: an AK/SK signature
    is verified and re-signed there (nginx would relay it unverified, with a Host it does not cover)."""
    return bool(aksk and authorization) or any(pattern.matches(request_target) for pattern in SHIM_BOUND)


# The same rule as nginx runs it, once per request: one regex that recognises a *plain* target, the
# only kind that goes straight to the legacy endpoint, and captures its path for the access log. It
# reads the path once, left to right, without backtracking (possessive repeats): runs of characters
# that cannot start anything SHIM_BOUND looks for, a `/` not followed by `/` or `.`, and the first
# letter of a collection name where the rest of the name (in any case) does not follow. It matches
# only if that reaches the query string or the end: anything else stops it (an escape, `;`, a
# backslash, a byte outside printable ASCII, `//`, `/.`, a collection name). Management paths are
# excluded first. tests/test_front_nginx.py checks it against SHIM_BOUND.
LOG_PATH_CAPTURE = "evs_front_path"
# What a plain path never holds: the query's start, escapes, `;`, backslashes, and `/` unless the
# regex's own branch takes it (a `/` not followed by `/` or `.`).
_NEVER_PLAIN = frozenset("?%;\\/")


def _char_class(excluded: set[str]) -> str:
    """Printable ASCII (0x21-0x7e) without `excluded`, as ranges of escapes (nothing else matches)."""
    ranges: list[list[int]] = []
    for code in range(0x21, 0x7F):
        if chr(code) in excluded:
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "[" + "".join(rf"\x{a:02x}" + (rf"-\x{b:02x}" if b != a else "") for a, b in ranges) + "]"


def _plain_target_regex() -> str:
    rests_by_first: dict[str, list[str]] = {}
    for word in TRANSLATED_COLLECTIONS:
        rests_by_first.setdefault(word[0].lower(), []).append(word[1:])
    starts = {char for first in rests_by_first for char in (first, first.upper())}
    word_starts = "".join(
        f"|[{re.escape(first + first.upper()) if first.upper() != first else re.escape(first)}]"
        f"(?!(?i:{_regex_alternatives(tuple(rests))}))"
        for first, rests in rests_by_first.items())
    return (f"^(?!{_regex_alternatives(MANAGEMENT_PATHS)}" r"(?:\?|$))"
            f"(?P<{LOG_PATH_CAPTURE}>(?:{_char_class(set(_NEVER_PLAIN) | starts)}++|/(?![/.]){word_starts})*+)"
            "(?![^?])")


PLAIN_TARGET_REGEX = _plain_target_regex()


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def wildcard(self) -> bool:
        return self.host in _WILDCARD_HOSTS


def parse_address(text: str) -> Address:
    """`HOST:PORT` or `[IPV6]:PORT`; ValueError names what is wrong."""
    host, separator, port_text = text.rpartition(":")
    if not separator or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT with a port from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (host == "*" or _is_plain_host(host)):
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    return Address(host, int(port_text))


_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _is_plain_host(text: str) -> bool:
    """An IP address or a DNS name: nothing nginx's parser could read as more than a host."""
    try:
        ip_address(text)
    except ValueError:
        return _HOST_NAME.fullmatch(text) is not None
    return True


def _checked_host(host: str, where: str) -> str:
    if not _is_plain_host(host):
        raise ConfigError(f"{where}: {host!r} is not a host name or address nginx can use")
    return host


def shim_address(settings: Settings, source: str) -> Address:
    """Where nginx reaches the shim: its listen address (loopback for a wildcard one)."""
    listen = settings.listen
    if listen.port == 0:
        raise ConfigError(f"{source}: listen.port is 0 (any free port): the front needs the shim on a fixed port")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)
    return Address(_checked_host(host, f"{source}: listen.host"), listen.port)


def render_nginx_conf(
    settings: Settings,
    errors: SdrsErrorTable,
    listen: Address,
    *,
    source: str,
    access_log: str = "/dev/stdout",
    ca_file: str = DEFAULT_CA_FILE,
) -> str:
    """The complete nginx.conf (runs as `nginx -p DIR -c FILE`, in the foreground)."""
    shim = shim_address(settings, source)
    if listen.port == shim.port and (listen.wildcard or settings.listen.host in _WILDCARD_HOSTS
                                     or listen.host == shim.host or listen.host == settings.listen.host):
        raise ConfigError(f"--listen {listen} would take the shim's own listen address "
                          f"({settings.listen.host}:{settings.listen.port}); give the front another port")
    legacy = URL(settings.upstreams.legacy) if settings.upstreams.legacy else None
    if legacy is not None:
        _checked_host(legacy.host or "", f"{source}: upstreams.legacy")
    _check_signed_hosts(settings, listen, source)
    values = {
        "source": source,
        "listen": str(listen),
        "shim": str(shim),
        "legacy": str(legacy) if legacy else "none configured: everything goes to the shim, which answers 501",
        "access_log": _literal(access_log),
        "pool": str(settings.limits.pool_connections),
        "header_buffer": _header_buffer(settings),
        "connect_timeout": _ms(min(settings.timeouts.legacy.connect, 75.0)),
        "read_timeout": _ms(_read_timeout_seconds(settings)),
        "plain_target": _quote("~" + PLAIN_TARGET_REGEX),
        "plain_route": "legacy" if legacy else "shim",
        "shim_bound": "".join(f"    #   - {pattern.why}\n" for pattern in SHIM_BOUND),
        "any_target": _quote(f"~^(?P<{LOG_PATH_CAPTURE}>[^?]*)"),
        "log_path": "$" + LOG_PATH_CAPTURE,
        "proxy_pass": _proxy_pass(legacy),
        "new_id_regex": _quote("~" + _NEW_ID_REGEX),
        "no_client_id_regex": _quote("~^[|]" + _NEW_ID_REGEX.removeprefix("^")),
        "new_id": _NEW_ID,
        # With aksk, the target decides only for requests without an Authorization header.
        "target_route": "$evs_front_target_route" if settings.aksk else "$evs_front_route",
        "signed_route": _SIGNED_TO_SHIM if settings.aksk else "",
        # The log's path is the target map's capture: key it on that map so that it has run.
        "log_route": "$evs_front_target_route" if settings.aksk else "$evs_front_route",
        "legacy_upstream_block": _legacy_upstream_block(legacy, settings.limits.pool_connections),
        "legacy_host": "$http_host" if settings.passthrough.preserve_host or legacy is None
        else _literal(legacy.raw_authority),
        "forwarded_host": "" if settings.passthrough.preserve_host
        else "            proxy_set_header X-Forwarded-Host $http_host;\n",
        "legacy_tls": _legacy_tls(legacy, ca_file),
        "request_id_headers": _REQUEST_ID_ANSWER_HEADERS,
        "error_locations": _error_locations(errors),
    }
    return _fill(_TEMPLATE, values)


def _check_signed_hosts(settings: Settings, listen: Address, source: str) -> None:
    """With `aksk`, clients that sign `host` sign the front's address, which the shim (reached at its
    own) accepts only when listed: refuse a config whose signed requests the shim would refuse."""
    if not settings.aksk or listen.wildcard:
        return
    front = comparable_host(str(listen))
    if front not in {comparable_host(alias) for alias in settings.aksk_host_aliases}:
        raise ConfigError(f"{source}: aksk_host_aliases: AK/SK clients that sign the Host sign the front's "
                          f"address; add {str(listen)!r} to aksk_host_aliases so that the shim accepts it")


# Requests with an Authorization header go to the shim when it holds key pairs (`aksk`): it verifies
# a signature and signs again for the legacy endpoint's Host; nginx would relay a forged one.
_SIGNED_TO_SHIM = """    map $http_authorization $evs_front_route {
        "" $evs_front_target_route;
        default shim;  # aksk: a signature is verified and signed again by the shim
    }
"""


# nginx's $request_id (32 random hex digits) as the shim's new ids: req-<uuid4>.
_NEW_ID_REGEX = r"^(.{8})(.{4}).(.{3}).(.{3})(.{12})$"
_NEW_ID = '"req-$1-$2-4$3-a$4-$5"'


def _proxy_pass(legacy: URL | None) -> str:
    """Both upstreams by name, not through a variable (which nginx would parse and look up on every
    request): the legacy endpoint in the location, the shim in an `if` on the route."""
    if legacy is None:
        return f"            proxy_pass {SHIM_UPSTREAM};  # no URI part: the raw request target, unchanged\n"
    return (f"            proxy_pass {legacy.scheme}://{LEGACY_UPSTREAM};  # no URI part: the raw request target, "
            "unchanged\n"
            "            if ($evs_front_route = shim) {\n"
            f"                proxy_pass {SHIM_UPSTREAM};  # inherits everything else in this location\n"
            "            }\n")


def _read_timeout_seconds(settings: Settings) -> float:
    """nginx has one read timeout for both upstreams; it must not cut off an answer the shim is still
    entitled to give (its own 504 included): a relayed answer within `timeouts.legacy.total`, a
    translated call within a few SDRS exchanges plus `actions.confirm_timeout_seconds`."""
    timeouts = settings.timeouts
    shim_answer = max(timeouts.legacy.total, 3 * timeouts.sdrs.total + settings.actions.confirm_timeout_seconds)
    return shim_answer + 1


def _header_buffer(settings: Settings) -> str:
    """One buffer holds the request line or a header line as long as the shim's parser accepts
    (its limits exclude the CRLF)."""
    longest = max(settings.limits.max_line_size, settings.limits.max_field_size) + 2
    return f"{math.ceil(longest / 1024)}k"


def _ms(seconds: float) -> str:
    return f"{math.ceil(seconds * 1000)}ms"


def _quote(text: str, quote: str = '"') -> str:
    """An nginx quoted string: its parser unescapes a backslash before a backslash or a quote."""
    return quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def _literal(text: str) -> str:
    """A quoted string nginx must not read variables in (a path, a host name)."""
    if "$" in text:
        raise ConfigError(f"{text!r}: a `$` would be read as an nginx variable")
    return _quote(text)


def _legacy_upstream_block(legacy: URL | None, pool: int) -> str:
    if legacy is None:
        return ""
    host = f"[{legacy.host}]" if ":" in (legacy.host or "") else legacy.host
    return (f"    upstream {LEGACY_UPSTREAM} {{\n"
            f"        server {host}:{legacy.port};\n"
            f"        keepalive {pool};\n"
            f"    }}\n")


def _legacy_tls(legacy: URL | None, ca_file: str) -> str:
    if legacy is None or legacy.scheme != "https":
        return ""
    return ("            # TLS to the legacy endpoint: its own name for SNI and the certificate check, as\n"
            "            # the shim does (the upstream block's name would be sent otherwise).\n"
            "            proxy_ssl_server_name on;\n"
            f"            proxy_ssl_name {_literal(legacy.host or '')};\n"
            "            proxy_ssl_verify on;\n"
            "            proxy_ssl_verify_depth 4;\n"
            f"            proxy_ssl_trusted_certificate {_literal(ca_file)};\n"
            "            proxy_ssl_session_reuse on;\n")


_REQUEST_ID_ANSWER_HEADERS = (
    "            add_header X-Request-Id $evs_front_answer_x_request_id always;\n"
    "            add_header X-Openstack-Request-Id $evs_front_answer_os_request_id always;\n"
)

# nginx's own errors (an upstream down or too slow, a request it cannot parse) as the legacy envelope.
_FRONT_ERRORS: tuple[tuple[int, tuple[int, ...], str, bool], ...] = (
    (400, (400, 414, 494), "Malformed request: the front proxy could not read it (bad or oversized request "
                           "line or header).", False),
    (500, (500,), "The front proxy failed to handle the request; see its log.", False),
    (502, (502,), "${evs_front_upstream_name} is unreachable or sent a malformed answer; try again later.", True),
    (503, (503,), "The front proxy is overloaded; try again later.", True),
    (504, (504,), "${evs_front_upstream_name} did not answer in time.", True),
)


def _error_locations(errors: SdrsErrorTable) -> str:
    """Internal locations by URI, not named ones: nginx cannot redirect a request whose target it
    could not parse (`%00`, `/../`) to a named location (it answers a bare 500 instead)."""
    pages, locations = [], []
    for status, nginx_statuses, message, retry in _FRONT_ERRORS:
        uri = f"{_ERROR_PAGE_PREFIX}{status}"
        pages.append(f"        error_page {' '.join(map(str, nginx_statuses))} ={status} {uri};\n")
        body = legacy_error_body(LegacyError(status, message), errors).decode()
        if "$" in body.replace("${evs_front_upstream_name}", ""):
            raise ConfigError(f"the error table's entry for {status} holds a `$`, which nginx would read as a variable")
        retry_after = f"            add_header Retry-After {RETRY_AFTER_SECONDS} always;\n" if retry else ""
        locations.append(
            f"        location = {uri} {{\n"
            "            internal;\n"
            "            default_type application/json;\n"
            f"{retry_after}{_REQUEST_ID_ANSWER_HEADERS}"
            f"            return {status} {_quote(body, _SINGLE_QUOTE)};\n"
            "        }\n")
    return "".join(pages) + "\n" + "\n".join(locations)


def _fill(template: str, values: dict[str, str]) -> str:
    """Replace every `{{name}}` (nginx itself never writes `{{`)."""
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match[1]], template)


_TEMPLATE = """\
# nginx in front of evs-sdrs-shim, generated by `shim front-config` from {{source}}.
# Regenerate it (do not edit) whenever the shim's config or version changes.
# Run: nginx -e stderr -p DIR -c THIS_FILE   (DIR: writable, for the pid file and temp files; runs in
# the foreground; no root needed for a port above 1023).
#
# Translated URLs, the shim's own endpoints and every spelling that could name a translated URL
# after normalisation go to the shim; everything else goes straight to the legacy endpoint,
# streamed, with the request target exactly as the client sent it.
#   shim:   {{shim}}
#   legacy: {{legacy}}

daemon off;
worker_processes 1;  # one worker relays tens of thousands of requests per second; raise it for more
pid nginx.pid;
error_log stderr warn;
pcre_jit on;  # the routing and request-id regexes run on every request: compiled, not interpreted

events {
    worker_connections 4096;
}

http {
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    server_tokens off;  # nginx names itself only where no upstream answered (its own errors)

    # Where a request goes (`shim` or `legacy`), decided on the raw request target, before nginx
    # decodes or normalises anything (see the shim's README, "Behind nginx"). To the shim goes a
    # target that is or holds any of
{{shim_bound}}    # and everything else straight to the legacy endpoint. The first regex recognises that rest
    # (a plain target) in one pass, left to right, without backtracking; either regex captures the
    # path (without the query) for the access log.
    map $request_uri {{target_route}} {
        {{plain_target}} {{plain_route}};
        {{any_target}} shim;
        default shim;
    }
{{signed_route}}    map $evs_front_route $evs_front_upstream_name {
        shim "The EVS-to-SDRS shim";
        default "The legacy EVS endpoint";
    }
    # Host as the shim's passthrough sends it: the legacy endpoint's own (the client's goes on in
    # X-Forwarded-Host) unless passthrough.preserve_host; the shim gets the client's and decides itself.
    map $evs_front_route $evs_front_host {
        shim $http_host;
        default {{legacy_host}};
    }

    # The request id, chosen as the shim chooses it: the client's X-Openstack-Request-Id or
    # X-Request-Id when it is a plain token, else a new req-<uuid> made of nginx's random $request_id.
    # A client that sends neither (most) costs one lookup: its key is `|` and the random id alone.
    map "$http_x_openstack_request_id$http_x_request_id|$request_id" $evs_front_request_id {
        {{no_client_id_regex}} {{new_id}};
        default $evs_front_client_request_id;
    }
    map $evs_front_client_os_id $evs_front_client_request_id {
        "" $evs_front_client_x_id_or_new;
        default $evs_front_client_os_id;
    }
    map $evs_front_client_x_id $evs_front_client_x_id_or_new {
        "" $evs_front_new_id;
        default $evs_front_client_x_id;
    }
    map $http_x_openstack_request_id $evs_front_client_os_id {
        "~^[A-Za-z0-9._:-]{1,128}$" $http_x_openstack_request_id;
        default "";
    }
    map $http_x_request_id $evs_front_client_x_id {
        "~^[A-Za-z0-9._:-]{1,128}$" $http_x_request_id;
        default "";
    }
    map $request_id $evs_front_new_id {
        {{new_id_regex}} {{new_id}};
    }
    # Upstreams get the client's own request-id headers, or the chosen id where it sent none...
    map $http_x_request_id $evs_front_upstream_x_request_id {
        "" $evs_front_request_id;
        default $http_x_request_id;
    }
    map $http_x_openstack_request_id $evs_front_upstream_os_request_id {
        "" $evs_front_request_id;
        default $http_x_openstack_request_id;
    }
    # ...and every answer carries both, the upstream's own ids kept.
    map $upstream_http_x_request_id $evs_front_answer_x_request_id {
        "" $evs_front_request_id;
        default "";
    }
    map $upstream_http_x_openstack_request_id $evs_front_answer_os_request_id {
        "" $evs_front_request_id;
        default "";
    }

    # JSON access log: no headers and no query string (they may carry credentials). The path is the
    # routing regex's capture; this map makes sure routing ran first (nginx's own 400s skip it).
    map {{log_route}} $evs_front_log_path {
        default {{log_path}};
    }
    log_format evs_front escape=json
        '{"time":"$time_iso8601","level":"info","logger":"front.access","request_id":"$evs_front_request_id",'
        '"method":"$request_method","path":"$evs_front_log_path","status":$status,"duration_s":$request_time,'
        '"upstream":"$evs_front_route","upstream_status":"$upstream_status",'
        '"upstream_time_s":"$upstream_response_time","bytes_sent":$bytes_sent}';
    access_log {{access_log}} evs_front buffer=64k flush=1s;  # one write per 64 KiB or second

    upstream evs_shim {
        server {{shim}};
        keepalive {{pool}};
    }
{{legacy_upstream_block}}
    server {
        listen {{listen}};

        # Requests reach the upstreams as the shim would relay them: every header (underscores
        # too), any body size (the shim caps translated actions itself), request lines and header
        # lines as long as the shim's parser limits allow.
        underscores_in_headers on;
        ignore_invalid_headers off;  # relayed, not dropped: nginx itself refuses whitespace and controls
        merge_slashes off;
        client_max_body_size 0;
        large_client_header_buffers 8 {{header_buffer}};

{{error_locations}}
        location / {
{{proxy_pass}}            proxy_http_version 1.1;
            proxy_set_header Connection "";  # keep-alive to both upstreams
            proxy_set_header Host $evs_front_host;
{{forwarded_host}}            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $evs_front_upstream_x_request_id;
            proxy_set_header X-Openstack-Request-Id $evs_front_upstream_os_request_id;
            proxy_set_header Proxy-Authorization "";  # hop-by-hop, as the shim drops them (nginx
            proxy_set_header Proxy-Connection "";     # drops Connection, Keep-Alive, TE, Upgrade)
            proxy_set_header Trailer "";

            # Streamed both ways: nothing is buffered, compressed or decompressed.
            proxy_buffering off;
            proxy_request_buffering off;

            # The upstream's answer as it sent it: its own Server and Date, Location untouched, and
            # X-Accel-* headers relayed rather than obeyed; its own 5xx pass through unchanged.
            proxy_redirect off;
            proxy_pass_header Server;
            proxy_pass_header Date;
            proxy_pass_header X-Pad;
            proxy_pass_header X-Accel-Redirect;
            proxy_pass_header X-Accel-Expires;
            proxy_pass_header X-Accel-Limit-Rate;
            proxy_pass_header X-Accel-Buffering;
            proxy_pass_header X-Accel-Charset;
            proxy_ignore_headers X-Accel-Redirect X-Accel-Expires X-Accel-Limit-Rate X-Accel-Buffering X-Accel-Charset;
            proxy_intercept_errors off;

            # A request is retried on a fresh connection only when it was never sent (nginx never
            # repeats a POST it has sent): no duplicate action.
            proxy_next_upstream error timeout;
            proxy_connect_timeout {{connect_timeout}};
            proxy_send_timeout {{read_timeout}};
            proxy_read_timeout {{read_timeout}};  # longer than the shim's own limits: its 504 comes first
{{legacy_tls}}{{request_id_headers}}        }
    }
}
"""
