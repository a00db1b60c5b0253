"""Property (hypothesis): no other spelling of a mapped group's translated URL reaches the legacy endpoint.

Every translated route of a mapped group (its action, its item, the group collection, one of its
pairs, the pair collection) is spelled otherwise: characters escaped (in upper or lower hex, twice,
as IIS's `%uXXXX` or as overlong UTF-8), fixed words in another case, a delimiter after a segment (an
encoded `?` or `#`, `;x`, `%3B`, whitespace, a format suffix, a trailing dot), separators changed
(`//`, `/./`, `%2F`, a backslash, `/x/../`), a soft hyphen or a fullwidth letter. Each spelling goes
as raw bytes over a loopback socket to a shim whose legacy upstream is the project's legacy stand-in
holding the group's stale copy: the answer is a legacy 400, and neither the legacy stand-in nor SDRS
hears of it (README, Rules on translated routes: the rule is closed, not a list of normalisations).

One world per test function, on an event loop in a background thread (as in test_ownership_property.py).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import GROUP, PROJECT, RCG, REPROTECT_BODY, TOKEN, start_server, write_mappings
from shim.config import settings_from_mapping
from shim.legacy_sim.server import LegacySimulator
from shim.mappings import load_mappings
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.translate.url_space import TRANSLATED_ROUTES
from shim.web.app import build_app

RCG_COLLECTION = "os-vendor-replication-consistency-groups"
PAIR_COLLECTION = "os-vendor-replications"
FIXED_WORDS = ("v2", RCG_COLLECTION, PAIR_COLLECTION, "action")


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self.sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.002, job_run_seconds=0.005))
        self.sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=2)
        self.pair_id = self.sim.pair_ids(PROJECT, GROUP)[0]
        self.legacy = LegacySimulator()
        self.legacy.add_group(PROJECT, group_id=RCG, pair_count=2)  # the mapped group's stale copy
        self.runners = []
        for app in (self.sim.app(), self.legacy.app()):
            runner, url = await start_server(app)
            self.runners.append((runner, url))
        config = settings_from_mapping(
            {"upstreams": {"sdrs": self.runners[0][1], "legacy": self.runners[1][1]},
             "mappings": str(write_mappings(self.tmp_path / "mappings", [
                 {"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP}])),
             "state": {"backend": "memory"}},
            source="test", base_dir=self.tmp_path)
        runner, url = await start_server(build_app(config, load_mappings(config.mappings)))
        self.runners.append((runner, url))
        self.port = int(url.rsplit(":", 1)[1])

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner, _ in reversed(self.runners):
                await runner.cleanup()

        try:
            self.run(cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def send(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        head = [f"{method} {target} HTTP/1.1", "Host: shim.local", f"X-Auth-Token: {TOKEN}",
                "Accept: application/json", "Content-Type: application/json", f"Content-Length: {len(body)}",
                "Connection: close"]
        with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            with sock.makefile("rb") as stream:
                status = int(stream.readline().split()[1])
                answer = stream.read()
        return status, answer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    live = World(tmp_path_factory.mktemp("spellings"))
    live.start()
    yield live
    live.stop()


def _routes(pair_id: str) -> dict[str, tuple[str, list[str], bytes]]:
    """Each translated route of the mapped group: method, segments, body."""
    values = {"project_id": PROJECT, "rcg_id": RCG, "replication_id": pair_id}
    bodies = {"rcg-action": REPROTECT_BODY}
    methods = {"rcg-action": "POST", "rcgs": "GET", "pairs": "GET"}
    return {name: (methods.get(name, "GET"), path.format(**values).strip("/").split("/"), bodies.get(name, b""))
            for name, path in TRANSLATED_ROUTES.items()}


def _escape(char: str, how: str) -> str:
    code = ord(char)
    return {"upper": f"%{code:02X}", "lower": f"%{code:02x}", "twice": f"%25{code:02X}",
            "iis": f"%u{code:04X}", "overlong": f"%{0xC0 | code >> 6:02X}%{0x80 | code & 0x3F:02X}",
            "fullwidth": "".join(f"%{byte:02X}" for byte in chr(0xFF00 + code - 0x20).encode())
            if "!" <= char <= "~" else f"%{code:02X}"}[how]


_DELIMITERS = ["%3F", "%3Fx", "%3f%3F", "%23", "%23x", ";x", "%3B", "%3bjsessionid=1", ".", "%2e", "%2E.", "%20",
               "%09", "%00", "%0A", ".json", ".XML", "%C2%AD", "/", "%2F", "%5C", "\\", "%E2%80%8B"]
_SEPARATORS = ["//", "/./", "%2F", "%2f", "\\", "%5C", "%5c", "/x/../", "/%2e/", "/%2E%2E/x/", ";/", "/;x/"]


@st.composite
def other_spellings(draw: st.DrawFn, routes: dict[str, tuple[str, list[str], bytes]]) -> tuple[str, str, bytes]:
    """One route of the mapped group, spelled with one to four changes none of which a normalising
    server could not undo."""
    name = draw(st.sampled_from(sorted(routes)))
    method, segments, body = routes[name]
    segments = list(segments)
    separators = ["/"] * len(segments)
    suffix = ""
    for _ in range(draw(st.integers(1, 4))):
        change = draw(st.sampled_from(["escape", "case", "delimiter", "separator", "soft hyphen"]))
        index = draw(st.integers(0, len(segments) - 1))
        segment = segments[index]
        if change == "escape":
            position = draw(st.integers(0, len(segment) - 1))
            if segment[position] == "%":
                continue
            how = draw(st.sampled_from(["upper", "lower", "twice", "iis", "overlong", "fullwidth"]))
            segments[index] = segment[:position] + _escape(segment[position], how) + segment[position + 1:]
        elif change == "case" and segment in FIXED_WORDS:
            other_case = [segment.upper(), segment.title(), segment[:-1] + segment[-1].upper()]
            segments[index] = draw(st.sampled_from(other_case))
        elif change == "delimiter":
            if index == len(segments) - 1:
                suffix = draw(st.sampled_from(_DELIMITERS))
            else:
                segments[index] = segment + draw(st.sampled_from(_DELIMITERS))
        elif change == "separator":
            separators[index] = draw(st.sampled_from(_SEPARATORS))
        elif change == "soft hyphen" and segment in FIXED_WORDS:
            position = draw(st.integers(1, len(segment) - 1))
            segments[index] = segment[:position] + "%C2%AD" + segment[position:]
    target = "".join(separator + segment for separator, segment in zip(separators, segments, strict=True)) + suffix
    return method, target, body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_other_spelling_of_a_mapped_groups_url_reaches_the_legacy_endpoint(world, data):
    routes = _routes(world.pair_id)
    canonical = {"/" + "/".join(segments) for _, segments, _ in routes.values()}
    method, target, body = data.draw(other_spellings(routes))
    if target in canonical:  # every change undone by another (an escape inside a `%` kept): nothing to check
        return

    status, answer = world.send(method, target, body)

    assert status == 400, (target, status, answer)
    assert world.legacy.requests == [], (target, [request.path for request in world.legacy.requests])
    assert world.sim.requests == [], target  # refused before either side is asked
