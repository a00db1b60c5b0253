"""Property (hypothesis): whatever interleaving of actions, reads, lists and writes old clients send
about a mix of mapped and unmapped groups, no request about a mapped group reaches the legacy endpoint
and none about an unmapped group reaches SDRS.

One world per test function, on an event loop in a background thread (as in test_properties.py): the
SDRS simulator holds the mapped group; the legacy stand-in holds its stale copy (same RCG id, its own
pairs on the same disks) and a group that has not moved. The mapping entry records the copy's pair
ids as the group's legacy pair ids (`legacy:`, as `shim discover` writes it), so they are the mapped
group's ids too: clients name its pairs by them. "About" is judged on what each upstream received:
every path, query and body is searched for the other side's ids, in any spelling. Half the
sequences pause the mapped group first, so its pairs can be removed (and the group deleted): pair
creates on the disks of a removed pair, and calls about a deleted group, must stay away from the
legacy endpoint too.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import GROUP, PROJECT, RCG, TOKEN, start_server, write_mappings
from shim.config import settings_from_mapping
from shim.legacy_sim.server import LegacySimulator
from shim.mappings import load_mappings
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.web.app import build_app

GROUPS = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups"
PAIRS = f"/v2/{PROJECT}/os-vendor-replications"
ACTION_KEYS = ["os-reprotect-replication-consistency-group", "os-sync-replication-consistency-group",
               "os-stop-replication-consistency-group", "os-failover-replication-consistency-group",
               "os-reverse-replication-consistency-group"]


@dataclass
class Ids:
    mapped: list[str]  # the mapped RCG, its SDRS pairs, their disks
    unmapped: list[str]  # the unmigrated group, its legacy pairs, their disks
    stale_pairs: list[str]  # the legacy copy's own pairs (legacy ids, on the mapped group's disks), recorded
    disks_of: dict[str, list[str]]  # each SDRS pair of the mapped group -> its disks


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
        self.sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2)
        sdrs_pairs = [self.sim.state.pairs[(PROJECT, pair_id)] for pair_id in self.sim.pair_ids(PROJECT, GROUP)]
        self.legacy = LegacySimulator()
        stale = self.legacy.add_group(PROJECT, group_id=RCG, pair_count=2)
        stale_pairs = [self.legacy.pair(PROJECT, pair_id) for pair_id in stale.replication_ids]
        for stale_pair, sdrs_pair in zip(stale_pairs, sdrs_pairs, strict=True):
            stale_pair.volume_ids = sdrs_pair.volume_ids
        unmigrated = self.legacy.add_group(PROJECT, pair_count=2, replication_status="active-stopped")
        legacy_pairs = [self.legacy.pair(PROJECT, pair_id) for pair_id in unmigrated.replication_ids]
        self.ids = Ids(
            mapped=[RCG, *(pair.id for pair in sdrs_pairs), *(disk for pair in sdrs_pairs for disk in pair.volume_ids)],
            unmapped=[unmigrated.id, *(pair.id for pair in legacy_pairs),
                      *(disk for pair in legacy_pairs for disk in pair.volume_ids)],
            stale_pairs=[pair.id for pair in stale_pairs],
            disks_of={pair.id: list(pair.volume_ids) for pair in sdrs_pairs},
        )
        self.runners = []
        for app in (self.sim.app(), self.legacy.app()):
            runner, url = await start_server(app)
            self.runners.append((runner, url))
        legacy = {"name": "web tier (prod)", "description": None, "pairs": [
            {"id": stale_pair.id, "sdrs_id": sdrs_pair.id, "name": stale_pair.name, "description": None}
            for stale_pair, sdrs_pair in zip(stale_pairs, sdrs_pairs, strict=True)]}
        mapping = [{"project_id": PROJECT, "replication_consistency_group_id": RCG.upper(),
                    "protection_group_id": GROUP.replace("-", ""), "legacy": legacy}]
        config = settings_from_mapping(
            {"upstreams": {"sdrs": self.runners[0][1], "legacy": self.runners[1][1]},
             "mappings": str(write_mappings(self.tmp_path / "mappings", mapping)), "state": {"backend": "memory"},
             "actions": {"wait_for_previous_seconds": 0.05, "settle_seconds": 0}},
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

    def pause_mapped_group(self) -> None:
        """Stop the mapped group through the shim and wait for SDRS to settle: updates and removals of
        pairs (the legacy update needs a paused group) can follow."""
        self.send("POST", f"{GROUPS}/{RCG}/action", b'{"os-stop-replication-consistency-group":null}\n')

        async def settled() -> bool:
            try:
                return self.sim.group(PROJECT, GROUP).status not in ("protected", "stopping")
            except KeyError:
                return True  # deleted

        for _ in range(100):
            if self.run(settled()):
                return
            self.run(asyncio.sleep(0.01))

    def send(self, method: str, target: str, body: bytes = b"") -> int:
        head = [f"{method} {target} HTTP/1.1", "Host: shim.local", f"X-Auth-Token: {TOKEN}",
                "Accept: application/json", "Connection: close"]
        if body or method in ("POST", "PUT"):
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            with sock.makefile("rb") as stream:
                status = int(stream.readline().split()[1])
                stream.read()
        return status


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    live = World(tmp_path)
    live.start()
    yield live
    live.stop()


def spellings(identifier: str) -> st.SearchStrategy[str]:
    return st.sampled_from([identifier, identifier.upper(), identifier.replace("-", "")])


@st.composite
def requests(draw: st.DrawFn, ids: Ids) -> tuple[str, str, bytes]:
    side = draw(st.sampled_from(["mapped", "unmapped"]))
    group, pair_a, pair_b = (ids.mapped if side == "mapped" else ids.unmapped)[:3]
    disk = draw(st.sampled_from((ids.mapped if side == "mapped" else ids.unmapped)[3:]))  # any disk of a pair
    # A mapped group's pairs are named by their SDRS ids or by their recorded legacy ids.
    pair_ids = [pair_a, pair_b, *ids.stale_pairs] if side == "mapped" else [pair_a, pair_b]
    group_spelling, pair_spelling = draw(spellings(group)), draw(spellings(draw(st.sampled_from(pair_ids))))
    kind = draw(st.sampled_from(["read", "head", "action", "rename", "describe", "remove", "delete", "read-pair",
                                 "delete-pair", "list-groups", "list-pairs", "list-pairs-of", "create-pair",
                                 "create-group"]))
    if kind == "read":
        return "GET", f"{GROUPS}/{group_spelling}", b""
    if kind == "head":
        return "HEAD", f"{GROUPS}/{group_spelling}", b""
    if kind == "action":
        key = draw(st.sampled_from(ACTION_KEYS))
        return "POST", f"{GROUPS}/{group_spelling}/action", json.dumps({key: None}).encode()
    if kind == "rename":
        return "PUT", f"{GROUPS}/{group_spelling}", json.dumps(
            {"replication_consistency_group": {"name": draw(st.sampled_from(["a", "b.c", "d_e"]))}}).encode()
    if kind == "describe":
        return "PUT", f"{GROUPS}/{group_spelling}", json.dumps(
            {"replication_consistency_group": {"description": "x"}}).encode()
    if kind == "remove":
        return "PUT", f"{GROUPS}/{group_spelling}", json.dumps(
            {"replication_consistency_group": {"remove_replication_ids": [pair_spelling]}}).encode()
    if kind == "delete":
        return "DELETE", f"{GROUPS}/{group_spelling}", b""
    if kind == "read-pair":
        return "GET", f"{PAIRS}/{pair_spelling}", b""
    if kind == "delete-pair":
        return "DELETE", f"{PAIRS}/{pair_spelling}", b""
    if kind == "list-groups":
        query = draw(st.sampled_from(["", "?status=available", f"?volume_id={disk}", "?name=x", "?limit=5"]))
        return "GET", GROUPS + query, b""
    if kind == "list-pairs":
        query = draw(st.sampled_from(["", f"?volume_id={disk}", "?status=available", "?sort_dir=asc"]))
        return "GET", PAIRS + query, b""
    if kind == "list-pairs-of":
        return "GET", f"{PAIRS}?replication_consistency_group_id={group_spelling}", b""
    if kind == "create-pair":
        other = "5f1e2d3c-4b5a-4697-8a7b-6c5d4e3f2a1b"
        return "POST", PAIRS, json.dumps({"replication": {"volume_ids": [disk, other], "priority_station": "eu-de-01",
                                                          "replication_model": "hypermetro"}}).encode()
    return "POST", GROUPS, json.dumps({"replication_consistency_group": {
        "replication_ids": [pair_spelling], "priority_station": "eu-de-01", "replication_model": "hypermetro",
    }}).encode()


def mentions(text: str, identifiers: list[str]) -> list[str]:
    flat = text.replace("-", "").lower()
    return [identifier for identifier in identifiers if identifier.replace("-", "").lower() in flat]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_no_call_about_a_mapped_group_reaches_legacy_and_none_about_an_unmapped_one_reaches_sdrs(world, data):
    sequence = data.draw(st.lists(requests(world.ids), min_size=1, max_size=8))
    if data.draw(st.booleans()):  # paused first: removals of the mapped group's pairs go through
        world.pause_mapped_group()
        # A pair removed through the shim, then a legacy pair create on its disks, somewhere in the sequence.
        pair_id = data.draw(st.sampled_from(sorted(world.ids.disks_of)))
        disk = data.draw(st.sampled_from(world.ids.disks_of[pair_id]))
        remove = ("PUT", f"{GROUPS}/{RCG}", json.dumps(
            {"replication_consistency_group": {"remove_replication_ids": [pair_id]}}).encode())
        create = ("POST", PAIRS, json.dumps({"replication": {
            "volume_ids": [disk, "5f1e2d3c-4b5a-4697-8a7b-6c5d4e3f2a1b"], "priority_station": "eu-de-01",
            "replication_model": "hypermetro"}}).encode())
        at = data.draw(st.integers(0, len(sequence)))
        sequence[at:at] = [remove, *data.draw(st.lists(requests(world.ids), max_size=2)), create]
    for method, target, body in sequence:
        legacy_before, sdrs_before = len(world.legacy.requests), len(world.sim.requests)
        status = world.send(method, target, body)
        assert status < 600
        # The mapped group, every pair it ever had and every disk of those pairs: a pair the shim removed
        # stays SDRS's, and so do its disks (a pair create on them is refused, never relayed), also
        # after the group is deleted.
        for seen in world.legacy.requests[legacy_before:]:
            text = seen.path + " " + seen.body.decode("utf-8", "replace")
            assert not mentions(text, world.ids.mapped + world.ids.stale_pairs), (method, target, seen.path)
        for seen_method, path, _ in world.sim.requests[sdrs_before:]:
            assert not mentions(path, world.ids.unmapped + world.ids.stale_pairs), (method, target, seen_method, path)
        for call in world.sim.write_calls:
            assert not mentions(json.dumps(call), world.ids.unmapped + world.ids.stale_pairs), call
