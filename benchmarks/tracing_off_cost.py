"""What tracing off adds to one request, measured directly: the calls the hot paths make into
shim.tracing when `tracing.enabled` is false, timed in a loop (no server, no network).

    .venv/bin/python benchmarks/tracing_off_cost.py

For a passthrough call: the request's span (reading `traceparent`), its end, the legacy exchange's
span and its end. For a translated reprotect: the request's span and its end, the client's trace
headers for SDRS, and two SDRS exchanges' spans. Compare with the CPU per request of the rows in
benchmarks/RESULTS.md (about 100 us for a passthrough, 400 us for a reprotect on a quiet machine).
"""

from __future__ import annotations

import timeit

from multidict import CIMultiDict, CIMultiDictProxy

from shim.tracing import NO_TRACING, client_trace_headers

HEADERS = CIMultiDictProxy(CIMultiDict({
    "Host": "127.0.0.1:8080", "Accept": "application/json", "X-Auth-Token": "bench-token",
    "User-Agent": "golangsdk/2.0.0", "Content-Type": "application/json", "Content-Length": "52"}))
AUDIT = {"project_id": "p", "rcg_id": "r", "action": "os-reprotect-replication-consistency-group", "job_ids": ["j"]}
ROUTE = "/v2/{project_id}/os-vendor-replication-consistency-groups/{rcg_id}/action"


def passthrough(tracing=NO_TRACING, headers=HEADERS) -> None:
    span = tracing.request_span("GET", None, headers)
    if span.active:
        span.set("url.path", "/")
    leg = tracing.exchange_span("legacy", "GET", None, "127.0.0.1")
    if leg.active:
        pass
    leg.end(200, None)
    span.request_done(200, "passthrough", AUDIT)


def reprotect(tracing=NO_TRACING, headers=HEADERS) -> None:
    span = tracing.request_span("POST", ROUTE, headers)
    if span.active:
        span.set("url.path", "/")
    sdrs_headers = {"X-Request-Id": "req-1"}
    sdrs_headers.update(client_trace_headers(headers))
    for method in ("GET", "POST"):
        exchange = tracing.exchange_span("sdrs", method, "/v1/p/server-groups/g", "127.0.0.1")
        if exchange.active:
            pass
        exchange.end(200)
    span.request_done(200, "translated", AUDIT)


def main() -> None:
    for name, work in (("passthrough", passthrough), ("reprotect", reprotect)):
        runs = timeit.repeat(work, number=200_000, repeat=5)
        print(f"tracing off, {name}: {min(runs) / 200_000 * 1e6:.2f} us per request")


if __name__ == "__main__":
    main()
